//! Helpers the scenario modules share: fixed times, job ids, step and job builders, worker
//! registration, claim/complete shorthands, log reads and assertions. Holds no scenario.

use crate::{
    ClaimedAttempt, Completion, CompletionRecorded, ConflictKind, JobRecord, JobStore, LogAppend, LogQuery,
    NewJob, NewLogChunk, Result, StepRecord, StoreError, WorkerRegistration,
};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, Backoff, JobId, JobSpec, RetryPolicy, SessionId, StepSpec, Stream};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(super) const TTL: Duration = Duration::from_secs(30);

/// A fixed origin so times never depend on the clock.
pub(super) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default()
}

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh UUID v7 job id, strictly later than every earlier one.
pub(super) fn new_id() -> JobId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ms = 1_900_000_000_000 + n;
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    JobId(uuid::Uuid::new_v7(ts))
}

pub(super) fn step(name: &str) -> StepSpec {
    StepSpec::new(name, format!("echo {name}"))
}

pub(super) fn needs(mut s: StepSpec, deps: &[&str]) -> StepSpec {
    s.needs = deps.iter().map(|d| d.to_string()).collect();
    s
}

pub(super) fn retrying(mut s: StepSpec, max_attempts: u32, initial_secs: u64) -> StepSpec {
    let backoff = Backoff {
        initial: Duration::from_secs(initial_secs),
        max: Duration::from_secs(600),
        factor: 2.0,
        jitter: 0.0,
    };
    s.retry = RetryPolicy { max_attempts, backoff };
    s
}

pub(super) fn failed(code: i32) -> AttemptOutcome {
    AttemptOutcome::Failed { exit_code: Some(code), signal: None, why: None }
}

pub(super) fn keyed(key: &str) -> JobSpec {
    let mut j = JobSpec::new(vec![step("a")]);
    j.idempotency_key = Some(key.into());
    j
}

pub(super) async fn submit(s: &Arc<dyn JobStore>, spec: JobSpec, now: DateTime<Utc>) -> JobId {
    let id = new_id();
    let mut out = s.submit_jobs(vec![NewJob { id, spec, now }]).await.expect("submit_jobs");
    let one = out.pop().expect("one result per job").expect("job stored");
    assert!(one.created, "a job without a known idempotency key must be created");
    assert_eq!(one.id, id);
    id
}

/// A worker to register: the parts a scenario varies (the rest is fixed by [`registration`]).
pub struct WorkerSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its host.
    pub host: &'a str,
    /// The queues it serves.
    pub queues: &'a [&'a str],
    /// Its tags.
    pub tags: &'a [&'a str],
}

impl Default for WorkerSpec<'_> {
    fn default() -> Self {
        Self { name: "w1", host: "host1", queues: &["default"], tags: &[] }
    }
}

/// A registration of a new session for `w` in the default namespace (concurrency 4, stale
/// after the suite's lease TTL): the one every store test registers workers with.
pub fn registration(w: &WorkerSpec<'_>) -> WorkerRegistration {
    let session = SessionId::new();
    WorkerRegistration {
        session,
        token_hash: format!("hash-{session}"),
        namespace: "default".into(),
        name: w.name.into(),
        host: w.host.into(),
        profile: None,
        version: "test".into(),
        queues: w.queues.iter().map(|q| q.to_string()).collect(),
        tags: w.tags.iter().map(|t| t.to_string()).collect(),
        concurrency: 4,
        pid: Some(4242),
        instance_id: None,
        replace: false,
        stale_after: TTL,
    }
}

pub(super) async fn register(s: &Arc<dyn JobStore>, w: WorkerSpec<'_>, now: DateTime<Utc>) -> SessionId {
    let reg = registration(&w);
    let session = reg.session;
    s.register_worker(reg, now).await.expect("register_worker");
    session
}

pub(super) async fn worker(s: &Arc<dyn JobStore>) -> SessionId {
    register(s, WorkerSpec::default(), t0()).await
}

pub(super) async fn claim(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    max: u32,
    now: DateTime<Utc>,
) -> Vec<ClaimedAttempt> {
    s.claim(session, max, now, TTL).await.expect("claim")
}

pub(super) async fn claim_one(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    now: DateTime<Utc>,
) -> ClaimedAttempt {
    let mut got = claim(s, session, 1, now).await;
    assert_eq!(got.len(), 1, "expected one claimable step at {now}");
    got.remove(0)
}

pub(super) fn completion(session: SessionId, c: &ClaimedAttempt, outcome: AttemptOutcome) -> Completion {
    Completion {
        outputs: Default::default(),
        session,
        job_id: c.job_id,
        step: c.step.clone(),
        attempt_id: c.attempt_id,
        outcome,
        run_ms: None,
        jitter01: 0.5,
    }
}

pub(super) async fn try_finish(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    c: &ClaimedAttempt,
    outcome: AttemptOutcome,
    now: DateTime<Utc>,
) -> Result<CompletionRecorded> {
    let mut out = s.complete(vec![completion(session, c, outcome)], now).await.expect("complete");
    assert_eq!(out.len(), 1, "one result per completion");
    out.remove(0)
}

pub(super) async fn finish(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    c: &ClaimedAttempt,
    outcome: AttemptOutcome,
    now: DateTime<Utc>,
) -> CompletionRecorded {
    try_finish(s, session, c, outcome, now).await.expect("completion recorded")
}

pub(super) async fn get(s: &Arc<dyn JobStore>, id: JobId) -> JobRecord {
    s.get_job(id).await.expect("get_job")
}

pub(super) fn step_of<'a>(rec: &'a JobRecord, name: &str) -> &'a StepRecord {
    rec.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("job has no step '{name}'"))
}

pub(super) fn assert_conflict<T: Debug>(r: Result<T>, kind: ConflictKind, what: &str) {
    assert!(
        matches!(&r, Err(StoreError::Conflict(k, _)) if *k == kind),
        "{what}: expected Conflict({kind:?}), got {r:?}"
    );
}

pub(super) fn assert_not_found<T: Debug>(r: Result<T>, what: &str) {
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{what}: expected NotFound, got {r:?}");
}

pub(super) fn steps_of(claims: &[ClaimedAttempt]) -> Vec<&str> {
    let mut v: Vec<&str> = claims.iter().map(|c| c.step.as_str()).collect();
    v.sort_unstable();
    v
}

pub(super) fn chunk(stream: Stream, seq: u64, data: Vec<u8>) -> NewLogChunk {
    NewLogChunk { stream, seq, data }
}

pub(super) fn append(session: SessionId, c: &ClaimedAttempt, chunks: Vec<NewLogChunk>) -> LogAppend {
    LogAppend {
        session,
        job_id: c.job_id,
        step: c.step.clone(),
        attempt_id: c.attempt_id,
        chunks,
        dropped: 0,
    }
}

pub(super) async fn append_ok(s: &Arc<dyn JobStore>, item: LogAppend) {
    let out = s.append_logs(vec![item]).await.expect("append_logs");
    assert_eq!(out.len(), 1);
    out.into_iter().for_each(|r| r.expect("chunks stored"));
}

/// Reads every page of a job's logs; returns the bytes per (step, stream).
pub(super) async fn read_all(
    s: &Arc<dyn JobStore>,
    job_id: JobId,
    step: Option<&str>,
    max_bytes: u64,
) -> HashMap<(String, Stream), Vec<u8>> {
    let mut out: HashMap<(String, Stream), Vec<u8>> = HashMap::new();
    let mut after = 0;
    for _ in 0..100_000 {
        let q = LogQuery { job_id, step: step.map(str::to_string), after, max_bytes };
        let page = s.read_logs(&q).await.expect("read_logs");
        if page.chunks.is_empty() {
            assert_eq!(page.next_cursor, after, "an empty page keeps the cursor");
            return out;
        }
        let bytes: u64 = page.chunks.iter().map(|c| c.data.len() as u64).sum();
        assert!(page.chunks.len() == 1 || bytes <= max_bytes, "page of {bytes} bytes exceeds {max_bytes}");
        for c in &page.chunks {
            assert!(c.cursor > after, "cursors increase");
            after = c.cursor;
            out.entry((c.step.clone(), c.stream)).or_default().extend_from_slice(&c.data);
        }
        assert_eq!(page.next_cursor, after, "next_cursor is the last chunk's");
    }
    panic!("read_logs never reached the end");
}
