//! The total log quota on PostgreSQL: past it the oldest finished jobs' logs are deleted
//! first (recorded on their attempts), then new output of running jobs is refused (recorded
//! too), and the store's usage counters say so. Skipped without `ROTA_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, JobId, JobSpec, SessionId, StepSpec, Stream};
use rota_store::{
    ClaimedAttempt, Completion, JobStore, LogAppend, LogQuery, NewJob, NewLogChunk, WorkerRegistration,
};
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
}

async fn start(s: &PgStore, w: SessionId, at: i64) -> ClaimedAttempt {
    let id = JobId::new();
    let spec = JobSpec::new(vec![StepSpec::new("s", "true")]);
    s.submit_jobs(vec![NewJob { id, spec, now: t(at) }]).await.unwrap().pop().unwrap().unwrap();
    s.claim(w, 1, t(at), TTL).await.unwrap().pop().expect("claimed")
}

async fn append(s: &PgStore, w: SessionId, a: &ClaimedAttempt, seq: u64, bytes: usize) {
    let chunk = NewLogChunk { stream: Stream::Stdout, seq, data: vec![b'x'; bytes] };
    let item = LogAppend {
        session: w,
        job_id: a.job_id,
        step: a.step.clone(),
        attempt_id: a.attempt_id,
        chunks: vec![chunk],
        dropped: 0,
    };
    let out = s.append_logs(vec![item]).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
}

async fn register(s: &PgStore, w: SessionId, name: &str) {
    let reg = WorkerRegistration {
        session: w,
        namespace: "default".into(),
        token_hash: "h".into(),
        name: name.into(),
        host: "h".into(),
        profile: None,
        version: "test".into(),
        queues: vec!["default".into()],
        tags: Vec::new(),
        concurrency: 2,
        pid: None,
        instance_id: None,
        replace: false,
        stale_after: TTL,
    };
    s.register_worker(reg, t(0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_finished_jobs_lose_their_logs_first_then_new_output_is_refused() {
    let Some(db) = TestDb::create().await else { return };
    let mut s = PgStore::connect(&db.url, PgOptions { pool_size: 2, ..PgOptions::default() }).await.unwrap();
    s.set_log_quota(Some(1_000));
    let w = SessionId::new();
    register(&s, w, "w").await;

    let old = start(&s, w, 1).await;
    append(&s, w, &old, 0, 800).await;
    let done = Completion {
        outputs: Default::default(),
        session: w,
        job_id: old.job_id,
        step: "s".into(),
        attempt_id: old.attempt_id,
        outcome: AttemptOutcome::Succeeded,
        run_ms: None,
        jitter01: 0.0,
    };
    s.complete(vec![done], t(2)).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(s.log_usage().live_bytes, 800);

    // 800 + 500 > 1 000: the finished job's output goes, the running one's is kept.
    let running = start(&s, w, 3).await;
    append(&s, w, &running, 0, 500).await;
    let usage = s.log_usage();
    assert_eq!((usage.live_bytes, usage.pruned_bytes, usage.quota_bytes), (500, 800, Some(1_000)));
    let page = s
        .read_logs(&LogQuery { job_id: old.job_id, step: None, after: 0, max_bytes: 1 << 20 })
        .await
        .unwrap();
    assert!(page.chunks.is_empty());
    assert_eq!(page.truncated.iter().map(|c| c.quota_pruned_bytes).collect::<Vec<_>>(), [800]);

    // Nothing finished is left to delete: new output past the quota is refused, and said so.
    append(&s, w, &running, 1, 600).await;
    assert_eq!((s.log_usage().live_bytes, s.log_usage().refused_bytes), (500, 600));
    let q = LogQuery { job_id: running.job_id, step: None, after: 0, max_bytes: 1 << 20 };
    let page = s.read_logs(&q).await.unwrap();
    assert_eq!(page.chunks.iter().map(|c| c.data.len()).sum::<usize>(), 500);
    assert_eq!(page.truncated.iter().map(|c| c.quota_refused_bytes).collect::<Vec<_>>(), [600]);
}

/// Two servers' stores on one database: what one appends shows in the other's usage (and
/// so in its quota checks) once the other refreshes its shared views, which every server
/// does every few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_servers_appends_count_against_the_quota_after_a_refresh() {
    let Some(db) = TestDb::create().await else { return };
    let opts = PgOptions { pool_size: 2, ..PgOptions::default() };
    let mut a = PgStore::connect(&db.url, opts.clone()).await.unwrap();
    let mut b = PgStore::connect(&db.url, opts).await.unwrap();
    a.set_log_quota(Some(1_000));
    b.set_log_quota(Some(1_000));
    let w = SessionId::new();
    register(&a, w, "w").await;
    let running = start(&a, w, 1).await;
    append(&a, w, &running, 0, 700).await;
    assert_eq!((a.log_usage().live_bytes, b.log_usage().live_bytes), (700, 0));

    b.refresh_shared_views().await.unwrap();
    assert_eq!(b.log_usage().live_bytes, 700, "B sees A's bytes");
    // Through B now: 700 + 600 passes the quota and nothing finished can be pruned.
    append(&b, w, &running, 1, 600).await;
    assert_eq!((b.log_usage().live_bytes, b.log_usage().refused_bytes), (700, 600));
}
