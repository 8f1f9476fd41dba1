//! Runs the shared `JobStore` conformance suite against SQLite (a fresh database file per
//! scenario), plus the guarantees specific to this backend: one failing write in a group
//! commit never undoes the others, and a submit survives closing and reopening the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_domain::{JobId, JobSpec, StepSpec};
use rota_store::{ConflictKind, JobStore, NewJob, StoreError};
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).expect("open the store")
}

fn spec(step: &str) -> JobSpec {
    JobSpec::new(vec![StepSpec::new(step, "true")])
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    rota_store::conformance::run_all(|| {
        let path = dir.path().join(format!("s{}", n.fetch_add(1, Ordering::Relaxed))).join("rota.db");
        async move { Arc::new(open(&path)) as Arc<dyn JobStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_commit_even_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("rota.db")));
    let taken = JobId::new();
    store.submit_jobs(vec![NewJob { id: taken, spec: spec("first"), now: now() }]).await.unwrap();

    // Many concurrent submits land in shared batches; every fifth reuses a taken id.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let id = if i % 5 == 0 { taken } else { JobId::new() };
        tasks.push(tokio::spawn(async move {
            let out = store.submit_jobs(vec![NewJob { id, spec: spec("s"), now: now() }]).await.unwrap();
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
        store.get_job(id).await.expect("a job whose submit succeeded is stored");
    }
    assert_eq!(store.get_job(taken).await.unwrap().spec.steps[0].name, "first");
}

#[tokio::test]
async fn submitted_jobs_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("rota.db");
    let id = JobId::new();
    {
        let store = open(&path);
        let out = store.submit_jobs(vec![NewJob { id, spec: spec("kept"), now: now() }]).await.unwrap();
        assert!(out[0].is_ok());
    }
    assert!(SqliteStore::logs_path_for(&path).exists(), "logs live in their own file");
    let store = open(&path);
    let rec = store.get_job(id).await.expect("the job is still there");
    assert_eq!(rec.spec.steps[0].name, "kept");
    assert_eq!(rec.row.created_at, now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_of_output_round_trip() {
    use rota_domain::Stream;
    use rota_store::{LogAppend, LogQuery, NewLogChunk, WorkerRegistration};

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("rota.db"));
    let id = JobId::new();
    store.submit_jobs(vec![NewJob { id, spec: spec("big"), now: now() }]).await.unwrap();
    let session = rota_domain::SessionId::new();
    let reg = WorkerRegistration {
        session,
        token_hash: "t".into(),
        name: "w".into(),
        host: "h".into(),
        profile: None,
        version: "test".into(),
        queues: vec!["default".into()],
        tags: vec![],
        concurrency: 1,
        pid: None,
        instance_id: None,
        replace: false,
        stale_after: std::time::Duration::from_secs(30),
    };
    store.register_worker(reg, now()).await.unwrap();
    let claimed = store.claim(session, 1, now(), std::time::Duration::from_secs(30)).await.unwrap();
    let a = &claimed[0];

    let output: Vec<u8> =
        (0..20 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    // Several appends, several chunks each, as a worker coalescing its output would send.
    let chunks: Vec<NewLogChunk> = output
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, c)| NewLogChunk { stream: Stream::Stdout, seq: i as u64, data: c.to_vec() })
        .collect();
    for batch in chunks.chunks(4) {
        let item = LogAppend {
            session,
            job_id: id,
            step: a.step.clone(),
            attempt_id: a.attempt_id,
            chunks: batch.to_vec(),
            dropped: 0,
        };
        let out = store.append_logs(vec![item]).await.unwrap();
        assert!(out[0].is_ok(), "{:?}", out[0]);
    }

    let mut back = Vec::with_capacity(output.len());
    let mut after = 0;
    loop {
        let q = LogQuery { job_id: id, step: None, after, max_bytes: 4 << 20 };
        let page = store.read_logs(&q).await.unwrap();
        if page.chunks.is_empty() {
            break;
        }
        page.chunks.iter().for_each(|c| back.extend_from_slice(&c.data));
        after = page.next_cursor;
        assert!(page.truncated.is_empty());
    }
    assert!(back == output, "20 MiB must round-trip byte-exact");
}

/// Data written by the previous release: a job stopped (revoked) while a step ran was left
/// with that step `running` under the ended job. Such a step still ends the old way when
/// its attempt reports, and the job gets its `finished_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_previous_release_stopped_with_a_step_running_still_finishes() {
    use rota_domain::{AttemptOutcome, JobState, SessionId, StepState};
    use rota_store::{Completion, StopKind, WorkerRegistration};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rota.db");
    let store = open(&path);
    let id = JobId::new();
    store.submit_jobs(vec![NewJob { id, spec: spec("s"), now: now() }]).await.unwrap();
    let session = SessionId::new();
    let reg = WorkerRegistration {
        session,
        token_hash: "hash".into(),
        name: "w1".into(),
        host: "h1".into(),
        profile: None,
        version: "test".into(),
        queues: vec!["default".into()],
        tags: Vec::new(),
        concurrency: 1,
        pid: None,
        instance_id: None,
        replace: false,
        stale_after: Duration::from_secs(30),
    };
    store.register_worker(reg, now()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let claimed = store.claim(session, 1, now(), ttl).await.unwrap().pop().expect("claimed");
    store.stop_job(id, StopKind::Revoke, now()).await.unwrap();
    // What the previous release stored at this point.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = raw
        .execute("UPDATE steps SET state = 'running', reason = NULL WHERE job_id = ?1", [id.to_string()])
        .unwrap();
    assert_eq!(n, 1);
    drop(raw);
    let rec = store.get_job(id).await.unwrap();
    assert_eq!((rec.row.state, rec.steps[0].state), (JobState::Revoked, StepState::Running));

    let done = Completion {
        session,
        job_id: id,
        step: "s".into(),
        attempt_id: claimed.attempt_id,
        outcome: AttemptOutcome::Failed { exit_code: None, signal: Some(15), why: None },
        run_ms: None,
        jitter01: 0.5,
    };
    let later = now() + chrono::Duration::seconds(5);
    let out = store.complete(vec![done], later).await.unwrap().pop().unwrap().unwrap();
    assert!(out.job_finished, "its last running step ended: the job is finished");
    let rec = store.get_job(id).await.unwrap();
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Revoked, Some(later)));
    assert_eq!(rec.steps[0].state, StepState::Revoked, "ended by the revoke, as the old release did");
}
