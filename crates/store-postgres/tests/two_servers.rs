//! What only a shared database has to prove: several stores (one per server) on one
//! PostgreSQL database at once. Claims never hand out a step twice, two steps of one job
//! completing through two stores settle once, two leaders never expire a lease twice, a live
//! worker name is unique in the database, and a batch's failing item leaves the others.
//! Skipped without `ROTA_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, JobId, JobSpec, JobState, SessionId, StepSpec, StepState};
use rota_store::conformance::{WorkerSpec, registration};
use rota_store::{Completion, JobStore, NewJob, SessionStatus, StoreError};
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
}

/// Two stores, as two servers would have, on one fresh database.
async fn two_servers() -> Option<(TestDb, Arc<dyn JobStore>, Arc<dyn JobStore>)> {
    let db = TestDb::create().await?;
    let opts = PgOptions { pool_size: 4, ..PgOptions::default() };
    let a = PgStore::connect(&db.url, opts.clone()).await.unwrap();
    let b = PgStore::connect(&db.url, opts).await.unwrap();
    Some((db, Arc::new(a), Arc::new(b)))
}

async fn register(s: &Arc<dyn JobStore>, name: &str) -> SessionId {
    let reg = registration(&WorkerSpec { name, ..WorkerSpec::default() });
    let session = reg.session;
    s.register_worker(reg, t(0)).await.unwrap();
    session
}

async fn submit(s: &Arc<dyn JobStore>, spec: JobSpec) -> JobId {
    let id = JobId::new();
    let out = s.submit_jobs(vec![NewJob { id, spec, now: t(0) }]).await.unwrap();
    assert!(out[0].as_ref().is_ok_and(|r| r.created), "{out:?}");
    id
}

fn done(session: SessionId, a: &rota_store::ClaimedAttempt) -> Completion {
    Completion {
        outputs: Default::default(),
        session,
        job_id: a.job_id,
        step: a.step.clone(),
        attempt_id: a.attempt_id,
        outcome: AttemptOutcome::Succeeded,
        run_ms: None,
        jitter01: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_through_two_servers_never_hand_out_a_step_twice() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 60;
    for _ in 0..JOBS {
        submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    }
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let session = register(&s, &format!("w{i}")).await;
            let mut got = Vec::new();
            loop {
                let batch = s.claim(session, 3, t(1), TTL).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|c| c.job_id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (JOBS, JOBS), "every step claimed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_steps_of_one_job_completing_through_two_servers_settle_once() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 20;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let mut last = StepSpec::new("c", "true");
        last.needs = vec!["a".into(), "b".into()];
        ids.push(
            submit(&a, JobSpec::new(vec![StepSpec::new("a", "true"), StepSpec::new("b", "true"), last]))
                .await,
        );
    }
    let (wa, wb) = (register(&a, "wa").await, register(&b, "wb").await);
    let mut claimed_a = Vec::new();
    let mut claimed_b = Vec::new();
    for _ in 0..JOBS {
        claimed_a.extend(a.claim(wa, 1, t(1), TTL).await.unwrap());
        claimed_b.extend(b.claim(wb, 1, t(1), TTL).await.unwrap());
    }
    assert_eq!(claimed_a.len() + claimed_b.len(), 2 * JOBS);
    // Each server completes what its worker holds, one completion per call, all at once.
    let mut tasks = Vec::new();
    for (s, w, claimed) in [(a.clone(), wa, claimed_a), (b.clone(), wb, claimed_b)] {
        for c in claimed {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.complete(vec![done(w, &c)], t(2)).await.unwrap() }));
        }
    }
    let mut readied = 0;
    for task in tasks {
        let out = task.await.unwrap().pop().unwrap().expect("recorded");
        readied += out.readied;
    }
    assert_eq!(readied as usize, JOBS, "each job's last step readied once, by the second completion");
    for id in &ids {
        let rec = a.get_job(*id).await.unwrap();
        let states: Vec<StepState> = rec.steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [StepState::Succeeded, StepState::Succeeded, StepState::Ready], "{id}");
        assert!(!rec.row.state.is_terminal(), "{id}: the job goes on with its last step");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_leaders_never_expire_a_lease_twice() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 30;
    for _ in 0..JOBS {
        submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    }
    let w = register(&a, "w").await;
    let claimed = a.claim(w, JOBS as u32, t(1), TTL).await.unwrap();
    assert_eq!(claimed.len(), JOBS);
    let later = t(1) + chrono::Duration::from_std(TTL).unwrap() + chrono::Duration::seconds(1);
    let (x, y) = tokio::join!(a.expire_leases(later), b.expire_leases(later));
    let (x, y) = (x.unwrap(), y.unwrap());
    let xs: HashSet<_> = x.iter().map(|l| l.attempt_id).collect();
    let ys: HashSet<_> = y.iter().map(|l| l.attempt_id).collect();
    assert!(xs.is_disjoint(&ys), "an attempt expired by both leaders");
    assert_eq!(xs.len() + ys.len(), JOBS, "every expired lease expired once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_worker_name_is_unique_in_the_database() {
    let Some((db, a, b)) = two_servers().await else { return };
    // Old workers (no instance id) supersede each other: every registration succeeds, and
    // whichever commits last is the one live session, whatever server it went through.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { register(&s, "same").await }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(task.await.unwrap());
    }
    let mut live = 0;
    for session in sessions {
        if let Some(w) = b.session_by_token(&format!("hash-{session}")).await.unwrap() {
            assert_eq!(w.status, SessionStatus::Active);
            live += 1;
        }
    }
    assert_eq!(live, 1, "one live session of the name");
    assert_eq!(a.list_workers().await.unwrap().len(), 1, "one worker listed");
    // The index, not only the check: a second live row of the name cannot be written.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let err = client
        .execute(
            "INSERT INTO workers (session, name, token_hash, host, version, queues, tags, concurrency, status, \
             registered_at, last_heartbeat_at) VALUES (gen_random_uuid(), 'same', 'other-hash', 'h', 't', '{}', \
             '{}', 1, 'active', now(), now())",
            &[],
        )
        .await
        .expect_err("a second live session of the name");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_of_a_completion_batch_leaves_the_others_recorded() {
    let Some((_db, a, _b)) = two_servers().await else { return };
    for _ in 0..3 {
        submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    }
    let w = register(&a, "w").await;
    let got = a.claim(w, 3, t(1), TTL).await.unwrap();
    assert_eq!(got.len(), 3);
    let mut bad = done(w, &got[1]);
    bad.session = SessionId::new();
    let out = a.complete(vec![done(w, &got[0]), bad, done(w, &got[2])], t(2)).await.unwrap();
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(matches!(out[1], Err(StoreError::Conflict(..))), "{out:?}");
    for (c, state) in got.iter().zip([JobState::Succeeded, JobState::Running, JobState::Succeeded]) {
        assert_eq!(a.get_job(c.job_id).await.unwrap().row.state, state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_clock_is_the_database_clock() {
    let Some((_db, a, _b)) = two_servers().await else { return };
    // Same host: the measured offset is a few milliseconds at most.
    let skew = (a.now() - Utc::now()).num_milliseconds().abs();
    assert!(skew < 1_000, "offset {skew} ms");
}

/// Claims through one server while another cancels the same jobs: rows are locked in
/// different orders, so transactions may deadlock; each is run again and no call fails.
/// Every job ends cancelled with no step left to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_cancels_racing_through_two_servers_all_succeed() {
    let Some((_db, a, b)) = two_servers().await else { return };
    const JOBS: usize = 40;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let steps = (0..3).map(|i| StepSpec::new(format!("s{i}"), "true")).collect();
        ids.push(submit(&a, JobSpec::new(steps)).await);
    }
    let mut claimers = Vec::new();
    for i in 0..3 {
        let s = a.clone();
        claimers.push(tokio::spawn(async move {
            let w = register(&s, &format!("c{i}")).await;
            let mut n = 0;
            loop {
                let got = s.claim(w, 2, t(1), TTL).await.expect("a claim never fails");
                if got.is_empty() {
                    return n;
                }
                n += got.len();
            }
        }));
    }
    let cancel_ids = ids.clone();
    let canceller = tokio::spawn(async move {
        for id in cancel_ids {
            b.stop_job(id, rota_store::StopKind::Cancel, t(1)).await.expect("a cancel never fails");
        }
    });
    canceller.await.unwrap();
    for c in claimers {
        c.await.unwrap();
    }
    for id in ids {
        let rec = a.get_job(id).await.unwrap();
        assert_eq!(rec.row.state, JobState::Cancelled, "{id}");
        assert!(
            rec.steps.iter().all(|s| !matches!(s.state, StepState::Ready | StepState::Waiting)),
            "{id}: {:?}",
            rec.steps
        );
    }
}

/// Deadlocks PostgreSQL detected in `db` (each cost the waiter `deadlock_timeout`, a second
/// by default, before one side was aborted and run again). Read after the stores closed:
/// a backend flushes its counters when it exits.
async fn deadlocks(db: &TestDb) -> i64 {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut last = -1;
    // Counters of exiting backends land within moments; poll rather than guess.
    for _ in 0..50 {
        client.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
        let n: i64 = client
            .query_one("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()", &[])
            .await
            .unwrap()
            .get(0);
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// A worker's heartbeat renews every lease it holds while its completions arrive in
/// batches of several attempts, listed in whatever order they ended. Both lock attempt rows,
/// so both must lock them in one order (attempt id): otherwise they deadlock, and each
/// deadlock stalls both for `deadlock_timeout` (found in a soak at 700 jobs/s: leases ran
/// out behind the stalls and attempts were lost). No deadlock may happen here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_racing_batched_completions_never_deadlock() {
    let Some(db) = TestDb::create().await else { return };
    let store = PgStore::connect(&db.url, PgOptions { pool_size: 4, ..PgOptions::default() }).await.unwrap();
    let store: Arc<PgStore> = Arc::new(store);
    let s: Arc<dyn JobStore> = store.clone();
    const ROUNDS: usize = 150;
    const HELD: usize = 4;
    for _ in 0..ROUNDS * HELD {
        submit(&s, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    }
    let w = register(&s, "w").await;
    for round in 0..ROUNDS {
        let mut held = s.claim(w, HELD as u32, t(1), TTL).await.unwrap();
        if held.is_empty() {
            break; // the claiming completions took the last jobs
        }
        // Completions listed newest first, the heartbeat oldest first: opposite orders.
        held.sort_by_key(|a| std::cmp::Reverse(a.attempt_id));
        let batch: Vec<Completion> = held.iter().map(|a| done(w, a)).collect();
        let hb = rota_store::Heartbeat {
            session: w,
            attempts: held.iter().rev().map(|a| a.attempt_id).collect(),
            draining: false,
            concurrency: None,
        };
        let (c, h) = (s.clone(), s.clone());
        // Every other round the completions also claim (a worker of protocol minor 2): that
        // transaction locks the worker row too, which the heartbeat locks first.
        let claim = round % 2 == 1;
        let completing = tokio::spawn(async move {
            if claim {
                let claimer = rota_store::Claimer { session: w, max: 1 };
                let out = c.complete_and_claim(batch, claimer, t(2), TTL).await.unwrap();
                for a in out.claimed.unwrap() {
                    c.complete(vec![done(w, &a)], t(2)).await.unwrap();
                }
                out.completed
            } else {
                c.complete(batch, t(2)).await.unwrap()
            }
        });
        let beating = tokio::spawn(async move { h.heartbeat(hb, t(2), TTL).await.unwrap() });
        let recorded = completing.await.unwrap();
        assert!(recorded.iter().all(|r| r.as_ref().is_ok_and(|r| !r.repeated)), "{recorded:?}");
        beating.await.unwrap();
    }
    store.close();
    drop(s);
    drop(store);
    assert_eq!(deadlocks(&db).await, 0, "heartbeats and completions deadlocked");
}

/// A claim locks its candidates' job rows without waiting: rows another transaction holds
/// (a cancel, a settlement through another server) are passed over, and the rest are still
/// handed out in claim order (priority, then age) across the worker's queues; once the
/// other transaction ends, the passed-over jobs are claimable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_passes_over_job_rows_another_transaction_holds_and_keeps_claim_order() {
    let Some((db, a, _b)) = two_servers().await else { return };
    let mut ids = Vec::new();
    for (queue, priority) in
        [("gpu", 1), ("default", 5), ("gpu", 5), ("default", 0), ("gpu", 0), ("default", 1)]
    {
        let mut j = JobSpec::new(vec![StepSpec::new("s", "true")]);
        (j.queue, j.priority) = (queue.to_string(), priority);
        ids.push(submit(&a, j).await);
    }
    // Claim order: [1, 2, 0, 5, 3, 4]. Hold jobs 2 and 5 in another transaction.
    let (mut client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let holder = client.transaction().await.unwrap();
    let held: Vec<uuid::Uuid> = vec![ids[2].0, ids[5].0];
    let locked = holder.query("SELECT id FROM jobs WHERE id = ANY($1) FOR UPDATE", &[&held]).await.unwrap();
    assert_eq!(locked.len(), 2);

    let mut reg = registration(&WorkerSpec { name: "both", ..WorkerSpec::default() });
    reg.queues = vec!["default".into(), "gpu".into()];
    let w = reg.session;
    a.register_worker(reg, t(0)).await.unwrap();
    let got: Vec<JobId> = a.claim(w, 3, t(1), TTL).await.unwrap().iter().map(|c| c.job_id).collect();
    assert_eq!(got, [ids[1], ids[0], ids[3]], "held jobs passed over, the rest in claim order");
    holder.rollback().await.unwrap();
    let rest = a.claim(w, 8, t(2), TTL).await.unwrap();
    let rest_ids: Vec<JobId> = rest.iter().map(|c| c.job_id).collect();
    assert_eq!(rest_ids, [ids[2], ids[5], ids[4]], "released jobs claimable again, in order");
    assert!(rest.windows(2).all(|p| p[0].attempt_id < p[1].attempt_id), "attempt ids rise in claim order");
    for id in &ids {
        let rec = a.get_job(*id).await.unwrap();
        assert_eq!(rec.row.state, JobState::Running, "{id}");
        assert_eq!(rec.steps[0].attempts.len(), 1, "{id}: claimed once");
    }
}

/// One completion batch holding every kind of item: two steps of one job (settled one
/// after the other), single-step jobs (settled together), a repeat of a recorded result, a
/// result from the wrong session, and a failure that ends a job's waiting step. Each item
/// gets its own answer and every job ends as its results say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_completion_batch_answers_each_item_and_settles_each_job_once() {
    let Some((_db, a, _b)) = two_servers().await else { return };
    let pair = submit(&a, JobSpec::new(vec![StepSpec::new("x", "true"), StepSpec::new("y", "true")])).await;
    let single = submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    let repeat = submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    let mut chain = JobSpec::new(vec![StepSpec::new("first", "false"), StepSpec::new("then", "true")]);
    chain.steps[1].needs = vec!["first".into()];
    let chain = submit(&a, chain).await;
    let refused = submit(&a, JobSpec::new(vec![StepSpec::new("s", "true")])).await;
    let w = register(&a, "w").await;
    let got = a.claim(w, 8, t(1), TTL).await.unwrap();
    let of = |job: JobId, step: &str| got.iter().find(|c| c.job_id == job && c.step == step).unwrap();
    assert_eq!(got.len(), 6, "{got:?}");
    let first = a.complete(vec![done(w, of(repeat, "s"))], t(2)).await.unwrap();
    assert!(first[0].as_ref().is_ok_and(|r| r.job_finished), "{first:?}");

    let mut failed = done(w, of(chain, "first"));
    failed.outcome = AttemptOutcome::Failed { exit_code: Some(1), signal: None, why: None };
    let mut wrong = done(w, of(refused, "s"));
    wrong.session = SessionId::new();
    let batch = vec![
        done(w, of(pair, "y")),
        done(w, of(single, "s")),
        done(w, of(repeat, "s")),
        failed,
        wrong,
        done(w, of(pair, "x")),
    ];
    let out = a.complete(batch, t(3)).await.unwrap();
    let ok = |i: usize| out[i].as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
    assert!(!ok(0).repeated && !ok(0).job_finished, "{out:?}");
    assert_eq!((ok(1).job_finished, ok(1).job_state), (true, Some(JobState::Succeeded)), "{out:?}");
    assert!(ok(2).repeated && !ok(2).job_finished, "{out:?}");
    assert_eq!((ok(3).job_finished, ok(3).job_state), (true, Some(JobState::Failed)), "{out:?}");
    assert!(matches!(out[4], Err(StoreError::Conflict(..))), "{out:?}");
    assert_eq!((ok(5).job_finished, ok(5).job_state), (true, Some(JobState::Succeeded)), "{out:?}");

    for (job, state) in [
        (pair, JobState::Succeeded),
        (single, JobState::Succeeded),
        (repeat, JobState::Succeeded),
        (chain, JobState::Failed),
        (refused, JobState::Running),
    ] {
        let rec = a.get_job(job).await.unwrap();
        assert_eq!(rec.row.state, state, "{job}");
        assert_eq!(rec.row.finished_at.is_some(), state.is_terminal(), "{job}");
    }
    let rec = a.get_job(chain).await.unwrap();
    assert_eq!(rec.steps[0].state, StepState::Failed);
    assert!(!matches!(rec.steps[1].state, StepState::Waiting | StepState::Ready), "{:?}", rec.steps);
    let rec = a.get_job(refused).await.unwrap();
    assert_eq!(rec.steps[0].attempts[0].status, rota_domain::AttemptStatus::Running);
}
