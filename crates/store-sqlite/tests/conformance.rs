//! Runs the shared `JobStore` conformance suite against SQLite, durability scenarios
//! included: the harness gives each scenario a fresh database file and reopens it by path.
//! Also the guarantees specific to this backend: the logs live in a file of their own, and
//! data as the previous release wrote it (raw SQL) still settles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_domain::{JobId, JobSpec, StepSpec};
use rota_store::conformance::Database;
use rota_store::{JobStore, NewJob};
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
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

/// One scenario's database: a file of its own. Closing is the default (dropping the store
/// finishes its queued writes and joins its writer threads), and so is a crash: dropping is
/// as close to one as SQLite gets in process, and a write the writer had already taken is
/// then committed or not at all.
struct SqliteDb {
    path: PathBuf,
}

#[async_trait]
impl Database for SqliteDb {
    async fn open(&self) -> Arc<dyn JobStore> {
        Arc::new(open(&self.path))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    rota_store::conformance::run_all(|| {
        let path = dir.path().join(format!("s{}", n.fetch_add(1, Ordering::Relaxed))).join("rota.db");
        async move { Arc::new(SqliteDb { path }) as Arc<dyn Database> }
    })
    .await;
}

#[tokio::test]
async fn the_logs_live_in_a_file_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("rota.db");
    let store = open(&path);
    let out =
        store.submit_jobs(vec![NewJob { id: JobId::new(), spec: spec("kept"), now: now() }]).await.unwrap();
    assert!(out[0].is_ok());
    drop(store);
    assert!(path.exists(), "the database is created, with its directory");
    assert!(SqliteStore::logs_path_for(&path).exists(), "logs live in their own file");
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
        namespace: "default".into(),
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
        outputs: Default::default(),
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
