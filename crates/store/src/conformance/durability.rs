//! Durability scenarios: what a store accepted is kept through a failing neighbour in a shared
//! batch, a clean close and reopen, a crash with writes in flight, and output of 20 MiB.
//! Closing and reopening go through the backend's [`Database`](super::Database) hooks;
//! nothing here knows how a backend batches or stores its writes.

use super::Fresh;
use super::fixtures::{
    WorkerSpec, append, append_ok, at, chunk, claim, finish, keyed, new_id, read_all, registration, step,
    submit, t0, worker,
};
use crate::{ConflictKind, JobFilter, JobRecord, JobStore, LogQuery, NewJob, StopKind, StoreError};
use rota_domain::{AttemptOutcome, JobId, JobSpec, JobState, StepState, Stream};
use std::collections::HashMap;
use std::sync::Arc;

/// Asserts `store` is the last handle, so closing it really lets go of the database.
fn last_handle(store: &Arc<dyn JobStore>) {
    assert_eq!(Arc::strong_count(store), 1, "the suite closes a store through its last handle");
}

/// Many concurrent submits share the backend's batches; every fifth reuses a taken id. The
/// refused ones fail alone: every other submit that answered success is stored.
pub(super) async fn concurrent_submits_commit_even_when_one_fails(s: Arc<dyn JobStore>) {
    let taken = new_id();
    let first = JobSpec::new(vec![step("first")]);
    let out = s.submit_jobs(vec![NewJob { id: taken, spec: first, now: t0() }]).await.unwrap();
    assert!(out[0].is_ok(), "{:?}", out[0]);

    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = s.clone();
        let id = if i % 5 == 0 { taken } else { new_id() };
        tasks.push(tokio::spawn(async move {
            let job = NewJob { id, spec: JobSpec::new(vec![step("s")]), now: t0() };
            let out = store.submit_jobs(vec![job]).await.unwrap();
            (id, out.into_iter().next().unwrap())
        }));
    }
    let mut stored = Vec::new();
    for t in tasks {
        let (id, r) = t.await.unwrap();
        if id == taken {
            assert!(matches!(r, Err(StoreError::Conflict(ConflictKind::Exists, _))), "duplicate id: {r:?}");
        } else {
            assert!(r.as_ref().is_ok_and(|s| s.created && s.id == id), "{r:?}");
            stored.push(id);
        }
    }
    assert_eq!(stored.len(), 160);
    for id in stored {
        s.get_job(id).await.expect("a job whose submit succeeded is stored");
    }
    assert_eq!(s.get_job(taken).await.unwrap().spec.steps[0].name, "first");
}

/// Everything a store accepted is there after a clean close and reopen: jobs with their
/// steps, attempts and logs, sessions, paused queues, revokes and idempotency keys; and an
/// attempt claimed before the close can still be completed by its holder after it.
pub(super) async fn submitted_jobs_survive_reopening(fresh: Fresh) {
    let Fresh { store: s, db } = fresh;
    let mut spec = keyed("kept");
    spec.steps.push(step("b"));
    let id = submit(&s, spec, t0()).await;
    let reg = registration(&WorkerSpec::default());
    let (w, token) = (reg.session, reg.token_hash.clone());
    s.register_worker(reg, t0()).await.unwrap();
    let got = claim(&s, w, 2, at(1)).await;
    assert_eq!(got.len(), 2);
    let (a, b) = (&got[0], &got[1]);
    append_ok(&s, append(w, a, vec![chunk(Stream::Stdout, 0, b"kept output\n".to_vec())])).await;
    append_ok(&s, append(w, b, vec![chunk(Stream::Stderr, 0, b"still running\n".to_vec())])).await;
    finish(&s, w, a, AttemptOutcome::Succeeded, at(2)).await;
    s.set_queue_paused("default", "other", true, at(3)).await.unwrap();
    let revoked = submit(&s, JobSpec::new(vec![step("r")]), at(4)).await;
    s.stop_job(revoked, StopKind::Revoke, at(5)).await.unwrap();

    let job = format!("{:?}", s.get_job(id).await.unwrap());
    let logs = read_all(&s, id, None, 1 << 20).await;
    let workers = format!("{:?}", s.list_workers().await.unwrap());
    let queues = s.queue_stats(None).await.unwrap();
    let revoked_job = format!("{:?}", s.get_job(revoked).await.unwrap());

    last_handle(&s);
    db.close(s).await;
    let s = db.open().await;

    assert_eq!(format!("{:?}", s.get_job(id).await.expect("the job is still there")), job);
    assert_eq!(read_all(&s, id, None, 1 << 20).await, logs, "its output is still there");
    assert_eq!(format!("{:?}", s.list_workers().await.unwrap()), workers);
    assert_eq!(s.queue_stats(None).await.unwrap(), queues, "the paused queue stays paused");
    assert_eq!(format!("{:?}", s.get_job(revoked).await.unwrap()), revoked_job);
    let live = s.session_by_token(&token).await.unwrap().expect("the session is still live");
    assert_eq!(live.session, w);
    let again = s.submit_jobs(vec![NewJob { id: new_id(), spec: keyed("kept"), now: at(6) }]).await.unwrap();
    assert_eq!(again[0].as_ref().map(|r| (r.id, r.created)).ok(), Some((id, false)), "the key is known");
    assert!(
        finish(&s, w, b, AttemptOutcome::Succeeded, at(7)).await.job_finished,
        "b's holder still holds it"
    );
    let rec = s.get_job(id).await.unwrap();
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Succeeded, Some(at(7))));
}

/// The store goes away (a crash where the backend can simulate one) while submits are in
/// flight. Every submit that answered success is stored whole; one that never answered is
/// stored whole or not at all, and submitting its idempotency key again stores it exactly
/// once.
pub(super) async fn writes_in_flight_when_the_store_goes_away(fresh: Fresh) {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    const ACKED_BEFORE_CRASH: usize = 40;
    let Fresh { store: s, db } = fresh;
    let key = |task: usize, i: usize| format!("in-flight-{task}-{i}");
    let two_steps = |k: &str| {
        let mut spec = keyed(k);
        spec.steps.push(step("b"));
        spec
    };

    // Each task submits one job after another, so when the store goes away each of them
    // most likely has one submit in flight.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, tx) = (s.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let k = key(task, i);
                let job = NewJob { id: new_id(), spec: two_steps(&k), now: t0() };
                let out = store.submit_jobs(vec![job]).await.unwrap();
                let ok = out.into_iter().next().unwrap().expect("a submit of a new key succeeds");
                assert!(ok.created, "{k} was new");
                if tx.send((k, ok.id)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut acked: HashMap<String, JobId> = HashMap::new();
    while acked.len() < ACKED_BEFORE_CRASH {
        let (k, id) = rx.recv().await.expect("submits are answered");
        acked.insert(k, id);
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        if let Err(e) = t.await {
            assert!(e.is_cancelled(), "a submitting task failed: {e}");
        }
    }
    // Answers that arrived before the abort took effect count too.
    while let Some((k, id)) = rx.recv().await {
        acked.insert(k, id);
    }

    last_handle(&s);
    db.crash(s).await;
    let s = db.open().await;

    let whole = |rec: &JobRecord, k: &str| {
        assert_eq!(rec.spec, two_steps(k), "{k}: the document as submitted");
        assert_eq!(rec.row.state, JobState::Queued, "{k}");
        let states: Vec<(&str, StepState)> =
            rec.steps.iter().map(|st| (st.name.as_str(), st.state)).collect();
        assert_eq!(states, [("a", StepState::Ready), ("b", StepState::Ready)], "{k}: every step stored");
    };
    for (k, id) in &acked {
        let rec = s.get_job(*id).await.unwrap_or_else(|e| panic!("{k}: answered success, then lost: {e}"));
        whole(&rec, k);
    }
    for task in 0..TASKS {
        for i in 0..EACH {
            let k = key(task, i);
            let job = NewJob { id: new_id(), spec: two_steps(&k), now: at(1) };
            let out = s.submit_jobs(vec![job]).await.unwrap().pop().unwrap().expect("submit after reopen");
            if let Some(id) = acked.get(&k) {
                assert_eq!((out.id, out.created), (*id, false), "{k}: its key still names the job");
            }
            whole(&s.get_job(out.id).await.unwrap(), &k);
        }
    }
    let all = s.list_jobs(&JobFilter { limit: 1000, ..JobFilter::default() }).await.unwrap();
    assert_eq!(all.len(), TASKS * EACH, "exactly one job per key: none lost, none stored twice");
}

/// 20 MiB of output in several appends of several chunks each, as a worker coalescing its
/// output would send it, round-trips byte-exact with nothing cut.
pub(super) async fn twenty_megabytes_of_output_round_trip(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("big")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 1, at(1)).await;
    assert_eq!(got.len(), 1);
    let a = &got[0];

    let output: Vec<u8> =
        (0..20 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let chunks: Vec<_> = output
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, c)| chunk(Stream::Stdout, i as u64, c.to_vec()))
        .collect();
    for batch in chunks.chunks(4) {
        append_ok(&s, append(w, a, batch.to_vec())).await;
    }

    let back = read_all(&s, id, None, 4 << 20).await;
    assert_eq!(back.len(), 1, "one step, one stream");
    assert!(back.get(&("big".into(), Stream::Stdout)) == Some(&output), "20 MiB must round-trip byte-exact");
    let page = s.read_logs(&LogQuery { job_id: id, step: None, after: 0, max_bytes: 1 }).await.unwrap();
    assert!(page.truncated.is_empty(), "nothing was cut: {:?}", page.truncated);
}
