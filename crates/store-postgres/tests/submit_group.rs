//! Group commit of submits on PostgreSQL (`submit_group.rs`): concurrent submits share one
//! durable transaction, yet each call gets its own answers, a bad job fails alone, an
//! idempotency key still names one job, and an answer is only given once its jobs are
//! committed (another connection sees them at once). Skipped without
//! `ROTA_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_domain::{JobId, JobSpec, StepSpec};
use rota_store::{ConflictKind, JobStore, NewJob, StoreError, Submitted};
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::collections::HashSet;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

fn spec(steps: &[&str]) -> JobSpec {
    let mut spec = JobSpec::new(steps.iter().map(|s| StepSpec::new(*s, "true")).collect());
    if let [first, rest @ ..] = spec.steps.as_mut_slice() {
        for s in rest {
            s.needs = vec![first.name.clone()];
        }
    }
    spec
}

fn job(spec: JobSpec) -> NewJob {
    NewJob { id: JobId::new(), spec, now: t0() }
}

async fn store(db: &TestDb) -> Arc<PgStore> {
    Arc::new(PgStore::connect(&db.url, PgOptions { pool_size: 4, ..PgOptions::default() }).await.unwrap())
}

/// A connection of its own, outside the store: it sees only what was committed.
async fn observer(db: &TestDb) -> Arc<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    Arc::new(client)
}

async fn count(c: &tokio_postgres::Client, sql: &str, id: JobId) -> i64 {
    c.query_one(sql, &[&id.0]).await.unwrap().get(0)
}

/// Submits each batch in a task of its own, all at once; their answers in order.
async fn submit_all(s: &Arc<PgStore>, batches: Vec<Vec<NewJob>>) -> Vec<Vec<rota_store::Result<Submitted>>> {
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|jobs| {
            let s = s.clone();
            tokio::spawn(async move { s.submit_jobs(jobs).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_submits_are_all_stored_and_answered_with_their_own_ids() {
    let Some(db) = TestDb::create().await else { return };
    let s = store(&db).await;
    // Single jobs and a few batches of three, so groups hold calls of several sizes.
    let batches: Vec<Vec<NewJob>> = (0..400)
        .map(|i| (0..if i % 10 == 0 { 3 } else { 1 }).map(|_| job(spec(&["a", "b"]))).collect())
        .collect();
    let sent: Vec<Vec<JobId>> = batches.iter().map(|b| b.iter().map(|j| j.id).collect()).collect();
    let answers = submit_all(&s, batches).await;
    let mut all = HashSet::new();
    for (ids, answer) in sent.iter().zip(&answers) {
        let got: Vec<JobId> = answer.iter().map(|r| r.as_ref().expect("stored").id).collect();
        assert_eq!(&got, ids, "each call is answered with its own jobs, in order");
        assert!(answer.iter().all(|r| r.as_ref().is_ok_and(|r| r.created)));
        all.extend(got);
    }
    assert_eq!(all.len(), 360 + 40 * 3);
    let c = observer(&db).await;
    let jobs: i64 = c.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    let steps: i64 = c.query_one("SELECT count(*) FROM steps", &[]).await.unwrap().get(0);
    assert_eq!((jobs, steps), (480, 960));
    for id in all.iter().take(20) {
        let r = s.get_job(*id).await.unwrap();
        assert_eq!(r.steps.len(), 2, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_job_among_concurrent_submits_fails_alone() {
    let Some(db) = TestDb::create().await else { return };
    let s = store(&db).await;
    let taken = job(spec(&["first"]));
    let taken_id = taken.id;
    assert!(s.submit_jobs(vec![taken]).await.unwrap()[0].is_ok());
    // An invalid document (refused before any statement) and a job whose id is taken (a
    // refusal only the database finds, which sends its group to one savepoint per job),
    // each among good ones.
    let mut batches = Vec::new();
    for i in 0..200 {
        batches.push(vec![match i {
            50 => job(JobSpec::new(Vec::new())),
            120 => NewJob { id: taken_id, spec: spec(&["dup"]), now: t0() },
            _ => job(spec(&["s"])),
        }]);
    }
    let ids: Vec<JobId> = batches.iter().map(|b| b[0].id).collect();
    let answers = submit_all(&s, batches).await;
    let c = observer(&db).await;
    for (i, (id, answer)) in ids.iter().zip(&answers).enumerate() {
        let r = &answer[0];
        match i {
            50 => assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}"),
            120 => assert!(matches!(r, Err(StoreError::Conflict(ConflictKind::Exists, _))), "{r:?}"),
            _ => {
                assert!(r.as_ref().is_ok_and(|r| r.created && r.id == *id), "{r:?}");
                assert_eq!(count(&c, "SELECT count(*) FROM steps WHERE job_id = $1", *id).await, 1);
            }
        }
    }
    let jobs: i64 = c.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    assert_eq!(jobs, 1 + 198);
    assert_eq!(s.get_job(taken_id).await.unwrap().spec.steps[0].name, "first", "the taken id kept its job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_of_one_idempotency_key_make_one_job() {
    let Some(db) = TestDb::create().await else { return };
    // Two stores, as two servers: their groups race for the key in the database too.
    let (a, b) = (store(&db).await, store(&db).await);
    let keyed = || {
        let mut s = spec(&["a"]);
        s.idempotency_key = Some("once".into());
        job(s)
    };
    let mut tasks = Vec::new();
    for i in 0..120 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        // Some calls carry the key twice, and an unkeyed job besides.
        let jobs = if i % 7 == 0 { vec![keyed(), job(spec(&["x"])), keyed()] } else { vec![keyed()] };
        tasks.push(tokio::spawn(async move { s.submit_jobs(jobs).await.unwrap() }));
    }
    let (mut ids, mut created) = (HashSet::new(), 0);
    for t in tasks {
        let answer = t.await.unwrap();
        let keyed_answers = if answer.len() == 3 { vec![&answer[0], &answer[2]] } else { vec![&answer[0]] };
        for r in keyed_answers {
            let r = r.as_ref().expect("a keyed submit is answered with the key's job");
            ids.insert(r.id);
            created += usize::from(r.created);
        }
        if answer.len() == 3 {
            assert!(answer[1].as_ref().is_ok_and(|r| r.created), "{:?}", answer[1]);
        }
    }
    assert_eq!(ids.len(), 1, "every submit of the key names one job: {ids:?}");
    assert_eq!(created, 1, "one of them made it");
    let c = observer(&db).await;
    let n: i64 =
        c.query_one("SELECT count(*) FROM jobs WHERE idempotency_key = 'once'", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    let unkeyed: i64 =
        c.query_one("SELECT count(*) FROM jobs WHERE idempotency_key IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(unkeyed, (0..120).filter(|i| i % 7 == 0).count() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answered_submit_is_committed() {
    let Some(db) = TestDb::create().await else { return };
    let s = store(&db).await;
    let c = observer(&db).await;
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let (s, c) = (s.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let j = job(spec(&["a", "b", "c"]));
            let id = j.id;
            let r = s.submit_jobs(vec![j]).await.unwrap().pop().unwrap().unwrap();
            assert_eq!(r.id, id);
            // At once, from another connection: committed, with its steps.
            let jobs = count(&c, "SELECT count(*) FROM jobs WHERE id = $1", id).await;
            let steps = count(&c, "SELECT count(*) FROM steps WHERE job_id = $1", id).await;
            (jobs, steps)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (1, 3), "a job answered as stored is visible to everyone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_that_cannot_reach_the_database_fails_every_call() {
    let Some(db) = TestDb::create().await else { return };
    let s = store(&db).await;
    s.close();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.submit_jobs(vec![job(spec(&["a"]))]).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    let c = observer(&db).await;
    let n: i64 = c.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}
