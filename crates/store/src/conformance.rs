//! The conformance suite every [`JobStore`] backend must pass, run from
//! `crates/store-*/tests/conformance.rs`. Each scenario gets a fresh store from the caller's
//! factory and panics naming what differed. Time is passed in explicitly, so nothing sleeps.
//! It tests behaviour through the trait only: no backend internals, no driver types.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{
    ClaimedAttempt, Claimer, Completion, CompletionRecorded, ConflictKind, Heartbeat, JobFilter, JobRecord,
    JobStore, KeyRevokeRequest, LogAppend, LogCut, LogQuery, NameHolder, NewJob, NewLogChunk, QueueStats,
    Result, RevokeRequest, SessionStatus, StepRecord, StopCause, StopKind, StoreError, WorkerRegistration,
};
use chrono::{DateTime, Utc};
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{
    AttemptId, AttemptOutcome, AttemptStatus, Backoff, JobId, JobSpec, JobState, OnLost, RetryPolicy,
    SessionId, StepSpec, StepState, Stream,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod credentials;
use credentials::*;

/// A scenario's future.
pub type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named scenario: runs against a fresh store and panics on failure.
pub struct Scenario {
    /// Name, as reported on failure.
    pub name: &'static str,
    /// The scenario.
    pub run: fn(Arc<dyn JobStore>) -> ScenarioFuture,
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, in the order [`run_all`] runs them.
        pub const SCENARIOS: &[Scenario] = &[$(Scenario { name: stringify!($name), run: |s| Box::pin($name(s)) }),*];
    };
}

scenarios![
    submit_and_idempotency,
    list_and_get,
    dag_readiness,
    claim_respects_queues,
    claim_respects_targets,
    claim_order_priority_age_and_max,
    claim_only_when_active,
    submit_and_claim_hands_out_in_one_call,
    fencing,
    retry_with_backoff,
    no_retry_once_a_step_failed,
    unasked_cancel_is_not_a_cancel,
    lease_expiry_retries_or_fails,
    extend_live_leases,
    heartbeat_renews_and_stops,
    durable_revokes,
    revoke_of_an_unknown_job_is_not_found,
    key_revokes_bind_later_jobs,
    revoke_without_terminate_lets_the_step_finish,
    late_results_keep_their_run_time,
    paused_queues,
    cancel_queued_and_running,
    revoke_and_lost_stopped_attempt,
    deadline_expiry,
    retry_job,
    logs_round_trip,
    logs_dedupe,
    logs_cap_keeps_tail,
    logs_refused_when_not_held,
    register_supersedes,
    names_are_held_by_live_instances,
    unregister_loses_attempts,
    workers_listing,
    prune,
    credentials_are_stored_once,
    credentials_init_races_agree_on_one,
    credentials_rotate,
    credentials_refuse_an_empty_hash,
];

/// Runs every scenario, each on a fresh store from `make`, and panics listing the ones
/// that failed (each failure's own panic message is printed as it happens).
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    let mut failed = Vec::new();
    for scenario in SCENARIOS {
        let store = make().await;
        if let Err(e) = tokio::spawn((scenario.run)(store)).await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
                Err(e) => e.to_string(),
            };
            failed.push(format!("- {}: {msg}", scenario.name));
        }
    }
    assert!(failed.is_empty(), "{} conformance scenario(s) failed:\n{}", failed.len(), failed.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Fixtures

const TTL: Duration = Duration::from_secs(30);

/// A fixed origin so times never depend on the clock.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh UUID v7 job id, strictly later than every earlier one.
fn new_id() -> JobId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ms = 1_900_000_000_000 + n;
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    JobId(uuid::Uuid::new_v7(ts))
}

fn step(name: &str) -> StepSpec {
    StepSpec::new(name, format!("echo {name}"))
}

fn needs(mut s: StepSpec, deps: &[&str]) -> StepSpec {
    s.needs = deps.iter().map(|d| d.to_string()).collect();
    s
}

fn retrying(mut s: StepSpec, max_attempts: u32, initial_secs: u64) -> StepSpec {
    let backoff = Backoff {
        initial: Duration::from_secs(initial_secs),
        max: Duration::from_secs(600),
        factor: 2.0,
        jitter: 0.0,
    };
    s.retry = RetryPolicy { max_attempts, backoff };
    s
}

fn failed(code: i32) -> AttemptOutcome {
    AttemptOutcome::Failed { exit_code: Some(code), signal: None, why: None }
}

async fn submit(s: &Arc<dyn JobStore>, spec: JobSpec, now: DateTime<Utc>) -> JobId {
    let id = new_id();
    let mut out = s.submit_jobs(vec![NewJob { id, spec, now }]).await.expect("submit_jobs");
    let one = out.pop().expect("one result per job").expect("job stored");
    assert!(one.created, "a job without a known idempotency key must be created");
    assert_eq!(one.id, id);
    id
}

struct WorkerSpec<'a> {
    name: &'a str,
    host: &'a str,
    queues: &'a [&'a str],
    tags: &'a [&'a str],
}

impl Default for WorkerSpec<'_> {
    fn default() -> Self {
        Self { name: "w1", host: "host1", queues: &["default"], tags: &[] }
    }
}

fn registration(w: &WorkerSpec<'_>) -> WorkerRegistration {
    let session = SessionId::new();
    WorkerRegistration {
        session,
        token_hash: format!("hash-{session}"),
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

async fn register(s: &Arc<dyn JobStore>, w: WorkerSpec<'_>, now: DateTime<Utc>) -> SessionId {
    let reg = registration(&w);
    let session = reg.session;
    s.register_worker(reg, now).await.expect("register_worker");
    session
}

async fn worker(s: &Arc<dyn JobStore>) -> SessionId {
    register(s, WorkerSpec::default(), t0()).await
}

async fn claim(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    max: u32,
    now: DateTime<Utc>,
) -> Vec<ClaimedAttempt> {
    s.claim(session, max, now, TTL).await.expect("claim")
}

async fn claim_one(s: &Arc<dyn JobStore>, session: SessionId, now: DateTime<Utc>) -> ClaimedAttempt {
    let mut got = claim(s, session, 1, now).await;
    assert_eq!(got.len(), 1, "expected one claimable step at {now}");
    got.remove(0)
}

fn completion(session: SessionId, c: &ClaimedAttempt, outcome: AttemptOutcome) -> Completion {
    Completion {
        session,
        job_id: c.job_id,
        step: c.step.clone(),
        attempt_id: c.attempt_id,
        outcome,
        run_ms: None,
        jitter01: 0.5,
    }
}

async fn try_finish(
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

async fn finish(
    s: &Arc<dyn JobStore>,
    session: SessionId,
    c: &ClaimedAttempt,
    outcome: AttemptOutcome,
    now: DateTime<Utc>,
) -> CompletionRecorded {
    try_finish(s, session, c, outcome, now).await.expect("completion recorded")
}

async fn get(s: &Arc<dyn JobStore>, id: JobId) -> JobRecord {
    s.get_job(id).await.expect("get_job")
}

fn step_of<'a>(rec: &'a JobRecord, name: &str) -> &'a StepRecord {
    rec.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("job has no step '{name}'"))
}

fn assert_conflict<T: Debug>(r: Result<T>, kind: ConflictKind, what: &str) {
    assert!(
        matches!(&r, Err(StoreError::Conflict(k, _)) if *k == kind),
        "{what}: expected Conflict({kind:?}), got {r:?}"
    );
}

fn assert_not_found<T: Debug>(r: Result<T>, what: &str) {
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{what}: expected NotFound, got {r:?}");
}

fn steps_of(claims: &[ClaimedAttempt]) -> Vec<&str> {
    let mut v: Vec<&str> = claims.iter().map(|c| c.step.as_str()).collect();
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------------------
// Submitting and reading jobs

async fn submit_and_idempotency(s: Arc<dyn JobStore>) {
    let mut spec = JobSpec::new(vec![step("a")]);
    spec.idempotency_key = Some("key-1".into());
    let first = submit(&s, spec.clone(), t0()).await;
    let again = s.submit_jobs(vec![NewJob { id: new_id(), spec: spec.clone(), now: at(1) }]).await.unwrap();
    let again = again[0].as_ref().expect("repeat with the same key");
    assert_eq!((again.id, again.created), (first, false), "same idempotency key must return the first job");

    // A batch: a new key, a repeat of a key seen earlier in the same batch, and a duplicate
    // id. One failing item never fails the others.
    let mut keyed = JobSpec::new(vec![step("a")]);
    keyed.idempotency_key = Some("key-2".into());
    let dup_id = new_id();
    let batch = vec![
        NewJob { id: dup_id, spec: keyed.clone(), now: at(2) },
        NewJob { id: new_id(), spec: keyed, now: at(2) },
        NewJob { id: dup_id, spec: JobSpec::new(vec![step("b")]), now: at(2) },
        NewJob { id: new_id(), spec: JobSpec::new(vec![step("c")]), now: at(2) },
    ];
    let out = s.submit_jobs(batch).await.expect("submit batch");
    assert_eq!(out.len(), 4, "one result per job");
    assert_eq!(out[0].as_ref().map(|r| (r.id, r.created)).ok(), Some((dup_id, true)));
    assert_eq!(out[1].as_ref().map(|r| (r.id, r.created)).ok(), Some((dup_id, false)));
    assert!(out[2].is_err(), "a duplicate job id must be refused: {:?}", out[2]);
    let last = out[3].as_ref().expect("the item after a failed one is stored");
    assert!(last.created);
    let rec = get(&s, last.id).await;
    assert_eq!(rec.spec.steps[0].name, "c");
    let rec = get(&s, dup_id).await;
    assert_eq!(rec.spec.steps[0].name, "a", "the refused duplicate must not overwrite the first job");
}

async fn list_and_get(s: Arc<dyn JobStore>) {
    let mut first = JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), step("c")]);
    first.name = Some("first".into());
    first.env = BTreeMap::from([("K".into(), "V".into())]);
    let a = submit(&s, first.clone(), t0()).await;
    let mut other = JobSpec::new(vec![step("x")]);
    other.queue = "other".into();
    other.priority = 7;
    let b = submit(&s, other, at(1)).await;

    let rec = get(&s, a).await;
    assert_eq!(rec.spec, first, "the stored document must come back as submitted");
    assert_eq!(rec.row.state, JobState::Queued);
    assert_eq!(rec.row.name.as_deref(), Some("first"));
    assert_eq!(rec.row.created_at, t0());
    assert_eq!(rec.row.finished_at, None);
    let names: Vec<&str> = rec.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "steps in document order");
    let states: Vec<StepState> = rec.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Ready, StepState::Waiting, StepState::Ready]);
    assert!(rec.steps.iter().all(|s| s.attempts.is_empty() && s.run_after.is_none()));
    assert_eq!((rec.row.counts.total, rec.row.counts.succeeded, rec.row.counts.running), (3, 0, 0));

    let all = s.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a], "newest first");
    let other_q =
        s.list_jobs(&JobFilter { queue: Some("other".into()), ..JobFilter::default() }).await.unwrap();
    assert_eq!(other_q.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);
    assert_eq!((other_q[0].priority, other_q[0].queue.as_str()), (7, "other"));
    let limited = s.list_jobs(&JobFilter { limit: 1, ..JobFilter::default() }).await.unwrap();
    assert_eq!(limited.len(), 1);
    let none =
        s.list_jobs(&JobFilter { states: vec![JobState::Running], ..JobFilter::default() }).await.unwrap();
    assert!(none.is_empty());
    let queued = s
        .list_jobs(&JobFilter { states: vec![JobState::Queued, JobState::Failed], ..JobFilter::default() })
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);

    assert_not_found(s.get_job(new_id()).await, "get_job of an unknown id");
}

async fn dag_readiness(s: Arc<dyn JobStore>) {
    let spec = JobSpec::new(vec![
        step("a"),
        needs(step("b"), &["a"]),
        needs(step("c"), &["a"]),
        needs(step("d"), &["b", "c"]),
    ]);
    let id = submit(&s, spec, t0()).await;
    let w = worker(&s).await;

    let first = claim(&s, w, 10, at(1)).await;
    assert_eq!(steps_of(&first), ["a"], "only the root is claimable");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Running);
    assert_eq!(step_of(&rec, "a").state, StepState::Running);
    let done = finish(&s, w, &first[0], AttemptOutcome::Succeeded, at(2)).await;
    assert_eq!((done.readied, done.job_finished, done.repeated), (2, false, false));
    assert_eq!(done.status, AttemptStatus::Succeeded);

    let mid = claim(&s, w, 10, at(3)).await;
    assert_eq!(steps_of(&mid), ["b", "c"]);
    let b = mid.iter().find(|c| c.step == "b").unwrap();
    let c = mid.iter().find(|c| c.step == "c").unwrap();
    assert_eq!(finish(&s, w, b, AttemptOutcome::Succeeded, at(4)).await.readied, 0);
    assert!(claim(&s, w, 10, at(5)).await.is_empty(), "d needs c too");
    assert_eq!(get(&s, id).await.row.state, JobState::Running);
    assert_eq!(finish(&s, w, c, AttemptOutcome::Succeeded, at(6)).await.readied, 1);

    let d = claim_one(&s, w, at(7)).await;
    assert_eq!(d.step, "d");
    let end = finish(&s, w, &d, AttemptOutcome::Succeeded, at(8)).await;
    assert!(end.job_finished, "the last step ends the job");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Succeeded);
    assert_eq!(rec.row.finished_at, Some(at(8)));
    assert!(rec.row.reason.is_some(), "a terminal job has a reason");
    assert_eq!((rec.row.counts.total, rec.row.counts.succeeded), (4, 4));
    let a = &step_of(&rec, "a").attempts;
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].number, a[0].status, a[0].exit_code()), (1, AttemptStatus::Succeeded, Some(0)));
    assert_eq!((a[0].started_at, a[0].finished_at), (at(1), Some(at(2))));
    assert_eq!(a[0].session, w);
    assert_eq!(a[0].worker, "w1");
}

// ---------------------------------------------------------------------------------------
// Claiming

async fn claim_respects_queues(s: Arc<dyn JobStore>) {
    let mut gpu = JobSpec::new(vec![step("train")]);
    gpu.queue = "gpu".into();
    let id = submit(&s, gpu, t0()).await;
    let plain = worker(&s).await;
    assert!(
        claim(&s, plain, 5, at(1)).await.is_empty(),
        "a worker must not claim from queues it does not serve"
    );
    let both =
        register(&s, WorkerSpec { name: "w2", queues: &["default", "gpu"], ..WorkerSpec::default() }, t0())
            .await;
    let got = claim_one(&s, both, at(2)).await;
    assert_eq!((got.job_id, got.step.as_str()), (id, "train"));

    // Across several queues the order is still priority, then age.
    let mut order = Vec::new();
    for (queue, priority) in [("gpu", 1), ("default", 5), ("gpu", 5), ("default", 0), ("gpu", 0)] {
        let mut j = JobSpec::new(vec![step("s")]);
        (j.queue, j.priority) = (queue.to_string(), priority);
        order.push(submit(&s, j, at(3)).await);
    }
    let got: Vec<JobId> = claim(&s, both, 10, at(4)).await.iter().map(|c| c.job_id).collect();
    assert_eq!(got, [order[1], order[2], order[0], order[3], order[4]]);
}

async fn claim_respects_targets(s: Arc<dyn JobStore>) {
    let mut on_web1 = JobSpec::new(vec![step("a")]);
    on_web1.target.host = Some("web1".into());
    let host_job = submit(&s, on_web1, t0()).await;
    let mut on_name = JobSpec::new(vec![step("a")]);
    on_name.target.host = Some("builder".into());
    let name_job = submit(&s, on_name, t0()).await;
    let mut tagged = JobSpec::new(vec![step("a")]);
    tagged.target.tags = vec!["ssd".into(), "x86".into()];
    let tag_job = submit(&s, tagged, t0()).await;

    let elsewhere =
        register(&s, WorkerSpec { name: "other", host: "db1", ..WorkerSpec::default() }, t0()).await;
    assert!(claim(&s, elsewhere, 10, at(1)).await.is_empty(), "no job targets this worker");

    let web1 = register(
        &s,
        WorkerSpec { name: "w-web", host: "web1", tags: &["ssd"], ..WorkerSpec::default() },
        t0(),
    )
    .await;
    let got = claim(&s, web1, 10, at(2)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [host_job],
        "host matches; tags are all required"
    );

    let builder =
        register(&s, WorkerSpec { name: "builder", host: "h9", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, builder, 10, at(3)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [name_job],
        "target host may name the worker"
    );

    let tags = &["x86", "ssd", "gpu"];
    let rich =
        register(&s, WorkerSpec { name: "rich", host: "h8", tags, ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, rich, 10, at(4)).await;
    assert_eq!(got.iter().map(|c| c.job_id).collect::<Vec<_>>(), [tag_job]);

    // Many higher-priority jobs this worker cannot take must not hide the one it can.
    for _ in 0..300 {
        let mut rare = JobSpec::new(vec![step("a")]);
        rare.priority = 10;
        rare.target.tags = vec!["rare".into()];
        submit(&s, rare, at(5)).await;
    }
    let reachable = submit(&s, JobSpec::new(vec![step("a")]), at(6)).await;
    let got = claim(&s, elsewhere, 10, at(7)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [reachable],
        "refused candidates must not starve"
    );
}

async fn claim_order_priority_age_and_max(s: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for prio in [0, 5, 1, 5] {
        let mut j = JobSpec::new(vec![step("a")]);
        j.priority = prio;
        ids.push(submit(&s, j, t0()).await);
    }
    let w = worker(&s).await;
    let order: Vec<JobId> = claim(&s, w, 3, at(1)).await.iter().map(|c| c.job_id).collect();
    assert_eq!(order, [ids[1], ids[3], ids[2]], "priority first, then age; at most max");
    let rest = claim(&s, w, 3, at(2)).await;
    assert_eq!(rest.iter().map(|c| c.job_id).collect::<Vec<_>>(), [ids[0]]);
    assert!(claim(&s, w, 0, at(3)).await.is_empty());

    // Within a job, document order; and what the worker needs to run the step.
    let mut j = JobSpec::new(vec![step("x"), step("y")]);
    j.env = BTreeMap::from([("A".into(), "job".into()), ("B".into(), "job".into())]);
    j.steps[0].env = BTreeMap::from([("B".into(), "step".into())]);
    j.steps[0].timeout = Some(Duration::from_secs(90));
    j.steps[0].memory_limit = Some(1 << 20);
    j.steps[0].keep_workspace = true;
    j.steps[1].log_cap = Some(1000);
    let id = submit(&s, j, at(4)).await;
    let got = claim(&s, w, 2, at(5)).await;
    assert_eq!(got.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(), ["x", "y"]);
    let x = &got[0];
    assert_eq!((x.job_id, x.number, x.run.as_str()), (id, 1, "echo x"));
    assert_eq!(x.env, BTreeMap::from([("A".into(), "job".into()), ("B".into(), "step".into())]));
    assert_eq!(
        (x.timeout, x.memory_limit, x.keep_workspace),
        (Some(Duration::from_secs(90)), Some(1 << 20), true)
    );
    assert_eq!((x.log_cap, got[1].log_cap), (DEFAULT_LOG_CAP, 1000));
    assert!(got[1].attempt_id > x.attempt_id, "fencing ids increase");
    let rec = get(&s, id).await;
    let att = &step_of(&rec, "x").attempts[0];
    assert_eq!((att.status, att.lease_expires_at), (AttemptStatus::Running, Some(at(5) + TTL)));
}

async fn claim_only_when_active(s: Arc<dyn JobStore>) {
    submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let hb = Heartbeat { session: w, attempts: vec![], draining: true, concurrency: None };
    s.heartbeat(hb, at(1), TTL).await.unwrap();
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "a draining session claims nothing");
    let hb = Heartbeat { session: w, attempts: vec![], draining: false, concurrency: None };
    s.heartbeat(hb, at(3), TTL).await.unwrap();
    assert_eq!(claim(&s, w, 5, at(4)).await.len(), 1, "active again");

    submit(&s, JobSpec::new(vec![step("b")]), at(5)).await;
    s.unregister_worker(w, at(6)).await.unwrap();
    assert!(claim(&s, w, 5, at(7)).await.is_empty(), "an offline session claims nothing");
}

async fn submit_and_claim_hands_out_in_one_call(s: Arc<dyn JobStore>) {
    let w = worker(&s).await;
    let other_queue =
        register(&s, WorkerSpec { name: "w2", queues: &["gpu"], ..WorkerSpec::default() }, t0()).await;
    let unknown = SessionId::new();
    let (a, b) = (new_id(), new_id());
    let jobs = vec![
        NewJob { id: a, spec: JobSpec::new(vec![step("a")]), now: t0() },
        NewJob { id: b, spec: JobSpec::new(vec![step("b")]), now: t0() },
    ];
    let claimers = vec![
        Claimer { session: unknown, max: 4 },
        Claimer { session: other_queue, max: 4 },
        Claimer { session: w, max: 1 },
    ];
    let out = s.submit_and_claim(jobs, claimers, at(1), TTL).await.expect("submit_and_claim");
    assert_eq!(out.submitted.len(), 2);
    assert!(out.submitted.iter().all(|r| r.as_ref().is_ok_and(|x| x.created)), "{:?}", out.submitted);
    assert_eq!(out.claimed.len(), 3, "one result per claimer");
    assert!(matches!(out.claimed[0], Err(StoreError::NotFound(_))), "unknown session: {:?}", out.claimed[0]);
    assert!(out.claimed[1].as_ref().is_ok_and(Vec::is_empty), "no step for another queue");
    let got = out.claimed[2].as_ref().expect("claim for w");
    assert_eq!(got.len(), 1, "max is respected");
    assert_eq!(got[0].job_id, a, "oldest first");
    assert_eq!(get(&s, a).await.row.state, JobState::Running);
    assert_eq!(claim_one(&s, w, at(2)).await.job_id, b, "the rest stays claimable");
}

// ---------------------------------------------------------------------------------------
// Fencing and completion

async fn fencing(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let holder = worker(&s).await;
    let other = register(&s, WorkerSpec { name: "w2", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, holder, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);

    assert_conflict(
        s.record_start(other, a.attempt_id, 1).await,
        ConflictKind::NotHeld,
        "record_start by another session",
    );
    s.record_start(holder, a.attempt_id, 777).await.expect("record_start by the holder");
    assert_eq!(step_of(&get(&s, id).await, "a").attempts[0].pid, Some(777));

    let r = try_finish(&s, other, a, AttemptOutcome::Succeeded, at(2)).await;
    assert_conflict(r, ConflictKind::NotHeld, "complete by another session");
    let mut wrong_step = completion(holder, a, AttemptOutcome::Succeeded);
    wrong_step.step = "b".into();
    let r = s.complete(vec![wrong_step], at(2)).await.unwrap().remove(0);
    assert_conflict(r, ConflictKind::WrongAttempt, "complete naming another step");
    assert_eq!(
        step_of(&get(&s, id).await, "a").state,
        StepState::Running,
        "refused completions change nothing"
    );

    let first = finish(&s, holder, a, failed(3), at(3)).await;
    assert_eq!((first.status, first.repeated), (AttemptStatus::Failed, false));
    let again = finish(&s, holder, a, failed(3), at(4)).await;
    assert!(again.repeated, "an identical repeat returns the recorded result");
    assert_eq!(
        (again.status, again.outcome.clone(), again.attempt_id),
        (first.status, failed(3), a.attempt_id)
    );
    assert_conflict(
        try_finish(&s, holder, a, AttemptOutcome::Succeeded, at(5)).await,
        ConflictKind::Ended,
        "a different outcome",
    );
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].outcome, Some(failed(3)), "first outcome stands");
    assert_eq!(step_of(&rec, "a").attempts[0].finished_at, Some(at(3)));
    assert_eq!(step_of(&rec, "a").state, StepState::Failed);

    // A completion batch: per-item results, a refused item never undoes the others.
    let items = vec![
        completion(other, b, AttemptOutcome::Succeeded),
        completion(holder, b, AttemptOutcome::Succeeded),
    ];
    let out = s.complete(items, at(6)).await.unwrap();
    assert!(matches!(&out[0], Err(StoreError::Conflict(ConflictKind::NotHeld, _))), "{:?}", out[0]);
    assert!(out[1].as_ref().is_ok_and(|r| r.job_finished), "{:?}", out[1]);
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(reason.contains("'a'") && reason.contains("exit code 3"), "job reason names the step: {reason}");

    // A superseded session's completion is refused.
    let id2 = submit(&s, JobSpec::new(vec![step("z")]), at(7)).await;
    let z = claim_one(&s, holder, at(8)).await;
    assert_eq!(z.job_id, id2);
    register(&s, WorkerSpec::default(), at(9)).await;
    assert_conflict(
        try_finish(&s, holder, &z, AttemptOutcome::Succeeded, at(10)).await,
        ConflictKind::Ended,
        "superseded session",
    );
    let unknown = ClaimedAttempt { attempt_id: AttemptId(i64::MAX - 1), ..z.clone() };
    let r = try_finish(&s, holder, &unknown, AttemptOutcome::Succeeded, at(10)).await;
    assert!(matches!(r, Err(StoreError::NotFound(_) | StoreError::Conflict(..))), "unknown attempt: {r:?}");
}

async fn retry_with_backoff(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![retrying(step("a"), 3, 10), needs(step("b"), &["a"])]), t0()).await;
    let w = worker(&s).await;
    let first = claim_one(&s, w, at(0)).await;
    let r = finish(&s, w, &first, failed(1), at(1)).await;
    assert_eq!((r.readied, r.job_finished), (1, false), "a retry readies the step again");
    let rec = get(&s, id).await;
    let a = step_of(&rec, "a");
    assert_eq!(a.state, StepState::Ready);
    assert_eq!(a.run_after, Some(at(11)), "initial backoff 10s, no jitter");
    assert_eq!(a.reason.as_deref(), Some("exit code 1"));
    assert_eq!(rec.row.state, JobState::Queued, "nothing is running");

    assert!(claim(&s, w, 5, at(5)).await.is_empty(), "not claimable before run_after");
    let second = claim_one(&s, w, at(11)).await;
    assert_eq!((second.step.as_str(), second.number), ("a", 2));
    finish(&s, w, &second, failed(1), at(12)).await;
    assert_eq!(get(&s, id).await.steps[0].run_after, Some(at(32)), "backoff doubles");
    assert!(claim(&s, w, 5, at(31)).await.is_empty());
    let third = claim_one(&s, w, at(32)).await;
    assert_eq!(third.number, 3);
    let end = finish(&s, w, &third, failed(2), at(33)).await;
    assert!(end.job_finished, "out of attempts: the job fails");

    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    assert_eq!(rec.row.finished_at, Some(at(33)));
    assert!(rec.row.reason.as_deref().is_some_and(|r| r.contains("exit code 2")), "{:?}", rec.row.reason);
    assert_eq!(step_of(&rec, "a").attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3]);
    let b = step_of(&rec, "b");
    assert_eq!(b.state, StepState::Skipped, "dependents of a failed step are skipped");
    assert!(b.reason.as_deref().is_some_and(|r| r.contains("'a'")), "{:?}", b.reason);
    assert_eq!(rec.row.counts.failed, 2);
}

async fn no_retry_once_a_step_failed(s: Arc<dyn JobStore>) {
    let id =
        submit(&s, JobSpec::new(vec![step("a"), retrying(step("b"), 5, 1), needs(step("c"), &["b"])]), t0())
            .await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);
    let r = finish(&s, w, a, failed(4), at(2)).await;
    assert!(!r.job_finished, "b is still running");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Running);
    assert_eq!(step_of(&rec, "c").state, StepState::Skipped, "nothing new starts once a step failed");
    let r = finish(&s, w, b, failed(1), at(3)).await;
    assert!(r.job_finished, "b has retries left, but the job is already failing");
    assert_eq!(r.readied, 0);
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Failed, Some(at(3))));
    assert_eq!(step_of(&rec, "b").state, StepState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(
        reason.contains("'a'") && reason.contains("exit code 4"),
        "the first failure is the reason: {reason}"
    );
    assert!(claim(&s, w, 5, at(100)).await.is_empty());
}

async fn unasked_cancel_is_not_a_cancel(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let r = finish(&s, w, &a, AttemptOutcome::Cancelled, at(2)).await;
    assert_eq!((r.status, r.job_finished), (AttemptStatus::Cancelled, false), "recorded as reported");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Queued, "nobody cancelled the job: the step follows on_lost");
    assert_eq!(step_of(&rec, "a").state, StepState::Ready);
}

// ---------------------------------------------------------------------------------------
// Leases and heartbeats

async fn lease_expiry_retries_or_fails(s: Arc<dyn JobStore>) {
    let retry_job = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let mut never_twice = step("once");
    never_twice.on_lost = OnLost::Fail;
    let fail_job = submit(&s, JobSpec::new(vec![never_twice]), t0()).await;
    let w = worker(&s).await;
    let claimed = claim(&s, w, 2, at(0)).await;
    assert_eq!(claimed.len(), 2);

    assert!(s.expire_leases(at(20)).await.unwrap().is_empty(), "leases still valid");
    let mut lost = s.expire_leases(at(31)).await.unwrap();
    lost.sort_by_key(|l| l.attempt_id);
    assert_eq!(lost.len(), 2);
    for l in &lost {
        assert_eq!(l.session, w);
        let expect_retry = l.job_id == retry_job;
        assert_eq!(l.retried, expect_retry, "{l:?}");
    }
    assert!(s.expire_leases(at(32)).await.unwrap().is_empty(), "expiry happens once");

    let rec = get(&s, retry_job).await;
    let a = step_of(&rec, "a");
    assert_eq!(a.attempts[0].status, AttemptStatus::Lost);
    assert!(matches!(a.attempts[0].outcome, Some(AttemptOutcome::Lost { .. })));
    assert_eq!(
        a.state,
        StepState::Ready,
        "on_lost: retry (a lost attempt is retried even with max_attempts 1)"
    );
    assert_eq!(rec.row.state, JobState::Queued);
    let run_after = a.run_after.unwrap_or(at(31));
    let again = claim_one(&s, w, run_after).await;
    assert_eq!((again.job_id, again.number), (retry_job, 2));

    let rec = get(&s, fail_job).await;
    assert_eq!(rec.row.state, JobState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(reason.contains("lost"), "on_lost: fail names the loss: {reason}");
    assert_eq!(rec.row.finished_at, Some(at(31)));
}

async fn extend_live_leases(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    claim(&s, w, 2, at(0)).await;
    assert_eq!(s.extend_live_leases(at(100), TTL).await.unwrap(), 2);
    assert!(s.expire_leases(at(120)).await.unwrap().is_empty(), "extended leases hold");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].lease_expires_at, Some(at(130)));
    assert_eq!(s.expire_leases(at(131)).await.unwrap().len(), 2);
    assert_eq!(s.extend_live_leases(at(200), TTL).await.unwrap(), 0, "only running attempts");
}

async fn heartbeat_renews_and_stops(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let other_id = submit(&s, JobSpec::new(vec![step("b")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(0)).await;
    let (a, b) = (got[0].attempt_id, got[1].attempt_id);
    let bogus = AttemptId(i64::MAX - 7);

    let hb = Heartbeat { session: w, attempts: vec![a, b, bogus], draining: false, concurrency: Some(9) };
    let out = s.heartbeat(hb, at(20), TTL).await.unwrap();
    let mut renewed = out.renewed.clone();
    renewed.sort();
    assert_eq!(renewed, [a, b]);
    assert_eq!(out.stop, [(bogus, StopCause::NotHeld)]);
    assert!(s.expire_leases(at(40)).await.unwrap().is_empty(), "renewed to 20s + TTL");
    let me = s.list_workers().await.unwrap().into_iter().find(|r| r.session == w).expect("worker listed");
    assert_eq!((me.concurrency, me.last_heartbeat_at, me.running), (9, at(20), 2));

    // A heartbeat that leaves an attempt out does not renew it.
    let hb = Heartbeat { session: w, attempts: vec![a], draining: false, concurrency: None };
    s.heartbeat(hb, at(45), TTL).await.unwrap();
    let lost = s.expire_leases(at(51)).await.unwrap();
    assert_eq!(lost.iter().map(|l| l.attempt_id).collect::<Vec<_>>(), [b]);
    assert_eq!(lost[0].job_id, other_id);

    // Cancelling the job: the holder is told to stop, and its lease is still renewed.
    s.stop_job(id, StopKind::Cancel, at(52)).await.unwrap();
    let hb = Heartbeat { session: w, attempts: vec![a, b], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(53), TTL).await.unwrap();
    assert_eq!(out.renewed, [a]);
    let mut stop = out.stop.clone();
    stop.sort_by_key(|(id, _)| *id);
    assert_eq!(stop, [(a, StopCause::Cancelled), (b, StopCause::NotHeld)]);

    // A superseded session holds nothing.
    register(&s, WorkerSpec::default(), at(54)).await;
    let hb = Heartbeat { session: w, attempts: vec![a], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(55), TTL).await.unwrap();
    assert!(out.renewed.is_empty());
    assert_eq!(out.stop, [(a, StopCause::NotHeld)]);
}

// ---------------------------------------------------------------------------------------
// Operator control and deadlines

async fn cancel_queued_and_running(s: Arc<dyn JobStore>) {
    let queued = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let out = s.stop_job(queued, StopKind::Cancel, at(1)).await.unwrap();
    assert!(out.changed && out.running.is_empty());
    assert_eq!(out.row.state, JobState::Cancelled);
    assert_eq!(out.row.reason.as_deref(), Some("cancelled by user"));
    assert_eq!(out.row.finished_at, Some(at(1)));
    let rec = get(&s, queued).await;
    assert!(rec.steps.iter().all(|s| s.state == StepState::Cancelled), "{:?}", rec.steps);
    let again = s.stop_job(queued, StopKind::Cancel, at(2)).await.unwrap();
    assert!(!again.changed, "an ended job is returned unchanged");
    assert_eq!(again.row.finished_at, Some(at(1)));

    let running = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), at(3)).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(4)).await;
    let out = s.stop_job(running, StopKind::Cancel, at(5)).await.unwrap();
    assert!(out.changed);
    assert_eq!(out.row.state, JobState::Cancelled);
    assert_eq!(out.row.finished_at, None, "a step is still running");
    assert_eq!(out.running.len(), 1);
    let r = &out.running[0];
    assert_eq!((r.attempt_id, r.job_id, r.step.as_str()), (a.attempt_id, running, "a"));
    assert_eq!((r.session, r.cause), (w, StopCause::Cancelled));
    assert!(claim(&s, w, 5, at(6)).await.is_empty(), "nothing of a cancelled job starts");
    assert_eq!(step_of(&get(&s, running).await, "b").state, StepState::Cancelled);
    let stopping = step_of(&get(&s, running).await, "a").clone();
    assert_eq!(stopping.state, StepState::Cancelled, "the running step ends with its job, not after it");
    assert_eq!(stopping.attempts[0].status, AttemptStatus::Running, "its attempt is still being stopped");

    finish(&s, w, &a, AttemptOutcome::Cancelled, at(7)).await;
    let rec = get(&s, running).await;
    assert_eq!(rec.row.state, JobState::Cancelled, "the job keeps its state");
    assert_eq!(rec.row.finished_at, Some(at(7)), "it ends when its last step stops");
    assert_eq!(step_of(&rec, "a").state, StepState::Cancelled);
    assert_eq!(step_of(&rec, "a").attempts[0].status, AttemptStatus::Cancelled);

    assert_not_found(s.stop_job(new_id(), StopKind::Cancel, at(8)).await, "stop_job of an unknown id");
}

async fn revoke_and_lost_stopped_attempt(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![retrying(step("a"), 5, 1), step("b")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let out = s.stop_job(id, StopKind::Revoke, at(2)).await.unwrap();
    assert_eq!(out.row.state, JobState::Revoked);
    assert_eq!(out.row.reason.as_deref(), Some("revoked by operator"));
    assert_eq!(
        out.running.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a.attempt_id, StopCause::Revoked)]
    );
    assert_eq!(step_of(&get(&s, id).await, "b").state, StepState::Revoked);

    // The worker never reports: the lease ends and the step is revoked, not retried.
    let lost = s.expire_leases(at(100)).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert!(!lost[0].retried, "a lost attempt of a stopped job is not retried");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").state, StepState::Revoked);
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Revoked, Some(at(100))));
    assert!(claim(&s, w, 5, at(200)).await.is_empty());
}

async fn deadline_expiry(s: Arc<dyn JobStore>) {
    let mut early = JobSpec::new(vec![step("x")]);
    early.deadline = Some(at(10));
    let early_id = submit(&s, early, t0()).await;
    let mut spec = JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), step("c")]);
    spec.deadline = Some(at(60));
    let id = submit(&s, spec, t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.job_id, early_id, "older job first");
    let a2 = claim_one(&s, w, at(2)).await;
    assert_eq!((a2.job_id, a2.step.as_str()), (id, "a"));
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(3)).await;

    assert!(s.expire_deadlines(at(30)).await.unwrap().is_empty());
    assert!(claim(&s, w, 5, at(61)).await.is_empty(), "nothing starts past the deadline, swept or not");
    let flagged = s.expire_deadlines(at(61)).await.unwrap();
    assert_eq!(
        flagged.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a2.attempt_id, StopCause::Deadline)]
    );
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.reason.as_deref()), (JobState::Failed, Some("deadline passed")));
    assert_eq!(rec.row.finished_at, None, "step a is still running");
    for name in ["b", "c"] {
        let st = step_of(&rec, name);
        assert_eq!((st.state, st.reason.as_deref()), (StepState::Skipped, Some("deadline passed")), "{name}");
    }
    assert_eq!(get(&s, early_id).await.row.state, JobState::Succeeded, "a finished job is untouched");
    assert!(s.expire_deadlines(at(62)).await.unwrap().is_empty(), "once");

    let hb = Heartbeat { session: w, attempts: vec![a2.attempt_id], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(63), TTL).await.unwrap();
    assert_eq!(out.stop, [(a2.attempt_id, StopCause::Deadline)]);
    finish(&s, w, &a2, AttemptOutcome::Cancelled, at(64)).await;
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Failed, Some(at(64))));
    let a = step_of(&rec, "a");
    assert_eq!((a.state, a.reason.as_deref()), (StepState::Failed, Some("deadline passed")));
}

async fn retry_job(s: Arc<dyn JobStore>) {
    let id =
        submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), needs(step("c"), &["b"])]), t0())
            .await;
    let w = worker(&s).await;
    assert_conflict(s.retry_job(id, at(0)).await, ConflictKind::JobState, "retry of a queued job");
    let a = claim_one(&s, w, at(1)).await;
    assert_conflict(s.retry_job(id, at(1)).await, ConflictKind::JobState, "retry of a running job");
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(2)).await;
    let b = claim_one(&s, w, at(3)).await;
    finish(&s, w, &b, AttemptOutcome::Timeout, at(4)).await;
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    assert_eq!(step_of(&rec, "c").state, StepState::Skipped);

    let row = s.retry_job(id, at(5)).await.expect("retry of a failed job");
    assert_eq!((row.state, row.reason.as_deref(), row.finished_at), (JobState::Queued, None, None));
    let rec = get(&s, id).await;
    let states: Vec<StepState> = rec.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [StepState::Succeeded, StepState::Ready, StepState::Waiting],
        "succeeded steps are kept"
    );
    assert!(step_of(&rec, "b").reason.is_none());
    let b2 = claim_one(&s, w, at(6)).await;
    assert_eq!((b2.step.as_str(), b2.number), ("b", 2), "attempt numbers continue");
    finish(&s, w, &b2, AttemptOutcome::Succeeded, at(7)).await;
    let c = claim_one(&s, w, at(8)).await;
    assert!(finish(&s, w, &c, AttemptOutcome::Succeeded, at(9)).await.job_finished);
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Succeeded);
    assert_eq!(step_of(&rec, "b").attempts.len(), 2, "attempt history is kept");
    assert_conflict(s.retry_job(id, at(10)).await, ConflictKind::JobState, "retry of a succeeded job");

    let cancelled = submit(&s, JobSpec::new(vec![step("x")]), at(11)).await;
    s.stop_job(cancelled, StopKind::Cancel, at(12)).await.unwrap();
    assert_eq!(s.retry_job(cancelled, at(13)).await.unwrap().state, JobState::Queued);
    assert_eq!(claim_one(&s, w, at(14)).await.job_id, cancelled);
    assert_not_found(s.retry_job(new_id(), at(15)).await, "retry of an unknown job");
}

// ---------------------------------------------------------------------------------------
// Logs

fn chunk(stream: Stream, seq: u64, data: Vec<u8>) -> NewLogChunk {
    NewLogChunk { stream, seq, data }
}

fn append(session: SessionId, c: &ClaimedAttempt, chunks: Vec<NewLogChunk>) -> LogAppend {
    LogAppend {
        session,
        job_id: c.job_id,
        step: c.step.clone(),
        attempt_id: c.attempt_id,
        chunks,
        dropped: 0,
    }
}

async fn append_ok(s: &Arc<dyn JobStore>, item: LogAppend) {
    let out = s.append_logs(vec![item]).await.expect("append_logs");
    assert_eq!(out.len(), 1);
    out.into_iter().for_each(|r| r.expect("chunks stored"));
}

/// Reads every page of a job's logs; returns the bytes per (step, stream).
async fn read_all(
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

async fn logs_round_trip(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);

    // 5 MiB of every byte value in 1 MiB chunks, plus non-UTF-8 on stderr.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let chunks =
        big.chunks(1 << 20).enumerate().map(|(i, c)| chunk(Stream::Stdout, i as u64, c.to_vec())).collect();
    append_ok(&s, append(w, a, chunks)).await;
    let odd = vec![0xff, 0xfe, 0x00, b'\n', 0xc3, 0x28, 0x80];
    append_ok(&s, append(w, a, vec![chunk(Stream::Stderr, 0, odd.clone())])).await;
    append_ok(&s, append(w, b, vec![chunk(Stream::Stdout, 0, b"from b\n".to_vec())])).await;

    let all = read_all(&s, id, None, 1 << 20).await;
    assert!(
        all.get(&("a".into(), Stream::Stdout)) == Some(&big),
        "5 MiB of stdout must round-trip byte-exact"
    );
    assert_eq!(all.get(&("a".into(), Stream::Stderr)), Some(&odd));
    assert_eq!(all.get(&("b".into(), Stream::Stdout)).map(Vec::as_slice), Some(&b"from b\n"[..]));

    let only_b = read_all(&s, id, Some("b"), 1 << 30).await;
    assert_eq!(only_b.keys().cloned().collect::<Vec<_>>(), [("b".to_string(), Stream::Stdout)]);

    // A tiny budget still returns one chunk per page; chunk metadata is complete.
    let q = LogQuery { job_id: id, step: Some("a".into()), after: 0, max_bytes: 1 };
    let page = s.read_logs(&q).await.unwrap();
    assert_eq!(page.chunks.len(), 1);
    let c = &page.chunks[0];
    assert_eq!((c.attempt_id, c.attempt, c.stream, c.data.len()), (a.attempt_id, 1, Stream::Stdout, 1 << 20));
    assert!(page.truncated.is_empty());

    let other = submit(&s, JobSpec::new(vec![step("z")]), at(2)).await;
    let empty = s.read_logs(&LogQuery { job_id: other, step: None, after: 0, max_bytes: 100 }).await.unwrap();
    assert!(empty.chunks.is_empty() && empty.next_cursor == 0);
}

async fn logs_dedupe(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let line = |n: u64| chunk(Stream::Stdout, n, format!("line {n}\n").into_bytes());
    append_ok(&s, append(w, &a, vec![line(0), line(1)])).await;
    append_ok(&s, append(w, &a, vec![line(1), line(2)])).await;
    append_ok(&s, append(w, &a, vec![line(0)])).await;
    // Same seq on the other stream is a different chunk.
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stderr, 0, b"err\n".to_vec())])).await;
    let all = read_all(&s, id, None, 1 << 20).await;
    assert_eq!(
        all.get(&("a".into(), Stream::Stdout)).map(Vec::as_slice),
        Some(&b"line 0\nline 1\nline 2\n"[..])
    );
    assert_eq!(all.get(&("a".into(), Stream::Stderr)).map(Vec::as_slice), Some(&b"err\n"[..]));
}

async fn logs_cap_keeps_tail(s: Arc<dyn JobStore>) {
    let mut capped = step("a");
    capped.log_cap = Some(100);
    let id = submit(&s, JobSpec::new(vec![capped]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.log_cap, 100);
    let mut full = Vec::new();
    for seq in 0..10u64 {
        let data: Vec<u8> = (0..30).map(|i| (seq * 30 + i) as u8).collect();
        full.extend_from_slice(&data);
        append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, seq, data)])).await;
    }
    // Resending a dropped chunk must not bring it back.
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, 0, full[..30].to_vec())])).await;
    let kept =
        read_all(&s, id, None, 1 << 20).await.remove(&("a".into(), Stream::Stdout)).unwrap_or_default();
    assert!(full.ends_with(&kept), "the kept bytes are the tail of the output");
    assert!(kept.len() <= 100 && kept.len() >= 70, "about the cap is kept: {}", kept.len());
    let page = s.read_logs(&LogQuery { job_id: id, step: None, after: 0, max_bytes: 1 << 20 }).await.unwrap();
    let cut = (full.len() - kept.len()) as u64;
    let expected = LogCut {
        step: "a".into(),
        attempt_id: a.attempt_id,
        cap_bytes: cut,
        quota_pruned_bytes: 0,
        quota_refused_bytes: 0,
    };
    assert_eq!(page.truncated, std::slice::from_ref(&expected), "the cut is reported");

    // Bytes the worker dropped before sending count in the cut: the largest total it
    // reported, so a resent or late (smaller) report never counts twice.
    let worker_dropped = |seq: u64, dropped: u64| LogAppend {
        dropped,
        ..append(w, &a, vec![chunk(Stream::Stdout, seq, vec![b'z'; 10])])
    };
    append_ok(&s, worker_dropped(10, 500)).await;
    append_ok(&s, worker_dropped(10, 500)).await;
    append_ok(&s, worker_dropped(11, 300)).await;
    let kept =
        read_all(&s, id, None, 1 << 20).await.remove(&("a".into(), Stream::Stdout)).unwrap_or_default();
    let page = s.read_logs(&LogQuery { job_id: id, step: None, after: 0, max_bytes: 1 << 20 }).await.unwrap();
    let cap_bytes = (full.len() + 20 - kept.len()) as u64 + 500;
    assert_eq!(
        page.truncated,
        [LogCut { cap_bytes, ..expected }],
        "what the server cut plus the 500 bytes the worker dropped"
    );
}

async fn logs_refused_when_not_held(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    let other = register(&s, WorkerSpec { name: "w2", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);
    let bytes = || vec![chunk(Stream::Stdout, 0, b"x".to_vec())];

    let out = s.append_logs(vec![append(other, a, bytes()), append(w, a, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::NotHeld, _))),
        "another session's append: {:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "the holder's append in the same batch: {:?}", out[1]);
    let unknown = ClaimedAttempt { attempt_id: AttemptId(i64::MAX - 3), ..a.clone() };
    let out = s.append_logs(vec![append(w, &unknown, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::WrongAttempt, _))),
        "unknown attempt: {:?}",
        out[0]
    );
    let mut wrong_step = append(w, a, bytes());
    wrong_step.step = "b".into();
    let out = s.append_logs(vec![wrong_step]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::WrongAttempt, _))),
        "attempt of another step: {:?}",
        out[0]
    );

    finish(&s, w, b, AttemptOutcome::Succeeded, at(2)).await;
    let out = s.append_logs(vec![append(w, b, bytes())]).await.unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict(ConflictKind::Ended, _))),
        "append after the attempt ended: {:?}",
        out[0]
    );
    let all = read_all(&s, id, None, 1 << 20).await;
    assert_eq!(all.len(), 1, "only the holder's chunk was stored: {all:?}");
}

// ---------------------------------------------------------------------------------------
// Workers

async fn register_supersedes(s: Arc<dyn JobStore>) {
    let mut once = step("once");
    once.on_lost = OnLost::Fail;
    let fail_job = submit(&s, JobSpec::new(vec![once]), t0()).await;
    let retry_job = submit(&s, JobSpec::new(vec![step("again")]), t0()).await;
    let first_reg = registration(&WorkerSpec::default());
    let old = first_reg.session;
    let old_token = first_reg.token_hash.clone();
    let r = s.register_worker(first_reg, t0()).await.unwrap();
    assert!(r.superseded.is_none() && r.lost.is_empty());
    let got = claim(&s, old, 5, at(1)).await;
    assert_eq!(got.len(), 2);

    let new_reg = registration(&WorkerSpec::default());
    let new = new_reg.session;
    let new_token = new_reg.token_hash.clone();
    let r = s.register_worker(new_reg, at(2)).await.unwrap();
    assert_eq!(r.superseded, Some(old));
    let mut lost = r.lost.clone();
    lost.sort_by_key(|l| l.attempt_id);
    assert_eq!(lost.len(), 2);
    for l in &lost {
        assert_eq!(l.session, old);
        assert_eq!(l.retried, l.job_id == retry_job, "{l:?}");
    }
    let rec = get(&s, retry_job).await;
    let att = &step_of(&rec, "again").attempts[0];
    assert_eq!(att.status, AttemptStatus::Lost);
    assert!(att.reason.as_deref().is_some_and(|r| r.contains("superseded")), "{:?}", att.reason);
    assert_eq!(get(&s, fail_job).await.row.state, JobState::Failed);

    assert!(s.session_by_token(&old_token).await.unwrap().is_none(), "a superseded session is not live");
    let live = s.session_by_token(&new_token).await.unwrap().expect("the new session is live");
    assert_eq!((live.session, live.status, live.name.as_str()), (new, SessionStatus::Active, "w1"));
    let listed = s.list_workers().await.unwrap();
    assert_eq!(listed.iter().map(|w| w.session).collect::<Vec<_>>(), [new], "latest session per name");
    let again = registration(&WorkerSpec { name: "w9", ..WorkerSpec::default() });
    let dup = WorkerRegistration { token_hash: new_token, ..again };
    assert!(s.register_worker(dup, at(3)).await.is_err(), "a credential hash belongs to one session");
}

/// A registration of `name` on `host` by instance `instance`.
fn instance_registration(name: &str, host: &str, instance: Option<&str>) -> WorkerRegistration {
    WorkerRegistration {
        instance_id: instance.map(str::to_string),
        ..registration(&WorkerSpec { name, host, ..WorkerSpec::default() })
    }
}

fn heartbeat_of(session: SessionId) -> Heartbeat {
    Heartbeat { session, attempts: Vec::new(), draining: false, concurrency: None }
}

async fn names_are_held_by_live_instances(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let first = instance_registration("vm", "h1", Some("inst-a"));
    let (a, a_token) = (first.session, first.token_hash.clone());
    s.register_worker(first, t0()).await.unwrap();
    let held = claim_one(&s, a, at(1)).await;
    assert_eq!(held.job_id, id);

    // Another instance, same name, while the holder is live: refused, nothing written.
    let intruder = instance_registration("vm", "h2", Some("inst-b"));
    let intruder_token = intruder.token_hash.clone();
    match s.register_worker(intruder.clone(), at(5)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!(
            *h,
            NameHolder {
                name: "vm".into(),
                session: a,
                instance_id: Some("inst-a".into()),
                host: "h1".into(),
                last_heartbeat_at: t0(),
            },
            "the refusal names the live holder"
        ),
        other => panic!("another instance must be refused the live name: {other:?}"),
    }
    assert!(s.session_by_token(&intruder_token).await.unwrap().is_none(), "a refused session is not stored");
    assert!(s.session_by_token(&a_token).await.unwrap().is_some(), "the holder keeps its session");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].status, AttemptStatus::Running, "the holder keeps its step");
    // The same instance id on another host (a copied workspace) is another instance too.
    let clone = instance_registration("vm", "h2", Some("inst-a"));
    assert!(matches!(s.register_worker(clone, at(5)).await, Err(StoreError::NameHeld(_))));
    // A heartbeat keeps the holder live past the first TTL.
    s.heartbeat(heartbeat_of(a), at(25), TTL).await.unwrap();
    match s.register_worker(instance_registration("vm", "h2", Some("inst-b")), at(50)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!(h.last_heartbeat_at, at(25)),
        other => panic!("a holder heard from 25 s ago (TTL 30 s) is live: {other:?}"),
    }

    // The same instance on the same host (a restart): supersedes, the old attempts are lost.
    let restart = instance_registration("vm", "h1", Some("inst-a"));
    let b = restart.session;
    let r = s.register_worker(restart, at(51)).await.unwrap();
    assert_eq!(r.superseded, Some(a));
    assert_eq!(r.lost.iter().map(|l| l.attempt_id).collect::<Vec<_>>(), [held.attempt_id]);
    assert!(s.session_by_token(&a_token).await.unwrap().is_none());

    // --replace: another instance takes the live name on purpose.
    let mut replace = instance_registration("vm", "h2", Some("inst-b"));
    replace.replace = true;
    let c = replace.session;
    let r = s.register_worker(replace, at(52)).await.unwrap();
    assert_eq!(r.superseded, Some(b));
    let listed = s.list_workers().await.unwrap();
    let vm = listed.iter().find(|w| w.name == "vm").unwrap();
    assert_eq!((vm.session, vm.host.as_str(), vm.instance_id.as_deref()), (c, "h2", Some("inst-b")));
    // ... and the instance it replaced cannot take it back while the new one is live.
    match s.register_worker(instance_registration("vm", "h1", Some("inst-a")), at(53)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!((h.session, h.host.as_str()), (c, "h2")),
        other => panic!("the replaced instance must be refused: {other:?}"),
    }

    // A stale holder (not heard from for the TTL) no longer holds the name.
    let after_ttl = at(52) + chrono::Duration::from_std(TTL).unwrap() + chrono::Duration::seconds(1);
    let r = s.register_worker(instance_registration("vm", "h1", Some("inst-a")), after_ttl).await.unwrap();
    assert_eq!(r.superseded, Some(c), "a stale session is superseded");

    // Sessions without an instance id (older workers, or registered before the upgrade)
    // prove nothing: they supersede and are superseded as before.
    let old = register(&s, WorkerSpec { name: "legacy", ..WorkerSpec::default() }, t0()).await;
    let r = s.register_worker(instance_registration("legacy", "h9", Some("new")), at(1)).await.unwrap();
    assert_eq!(r.superseded, Some(old), "an upgraded worker replaces its old session");
    let r = s.register_worker(instance_registration("legacy", "h8", None), at(2)).await.unwrap();
    assert!(r.superseded.is_some(), "a worker without an instance id supersedes as before");
}

async fn unregister_loses_attempts(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let reg = registration(&WorkerSpec::default());
    let (w, token) = (reg.session, reg.token_hash.clone());
    s.register_worker(reg, t0()).await.unwrap();
    let a = claim_one(&s, w, at(1)).await;
    let lost = s.unregister_worker(w, at(2)).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].attempt_id, lost[0].job_id, lost[0].retried), (a.attempt_id, id, true));
    assert!(s.session_by_token(&token).await.unwrap().is_none());
    let listed = s.list_workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| (w.session, w.status)).collect::<Vec<_>>(),
        [(w, SessionStatus::Offline)]
    );
    assert_eq!(get(&s, id).await.row.state, JobState::Queued, "the step will run again");
    assert_not_found(s.unregister_worker(SessionId::new(), at(3)).await, "unregister an unknown session");
}

async fn workers_listing(s: Arc<dyn JobStore>) {
    submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let zed = register(&s, WorkerSpec { name: "zed", ..WorkerSpec::default() }, t0()).await;
    let gone = register(&s, WorkerSpec { name: "able", ..WorkerSpec::default() }, t0()).await;
    let mid = register(&s, WorkerSpec { name: "mid", host: "h2", ..WorkerSpec::default() }, t0()).await;
    assert_eq!(claim(&s, zed, 2, at(1)).await.len(), 2);
    s.unregister_worker(gone, at(2)).await.unwrap();
    let listed = s.list_workers().await.unwrap();
    let order: Vec<(&str, SessionStatus, u32)> =
        listed.iter().map(|w| (w.name.as_str(), w.status, w.running)).collect();
    assert_eq!(
        order,
        [
            ("mid", SessionStatus::Active, 0),
            ("zed", SessionStatus::Active, 2),
            ("able", SessionStatus::Offline, 0)
        ],
        "live first, then by name"
    );
    let m = listed.iter().find(|w| w.session == mid).unwrap();
    assert_eq!(
        (m.host.as_str(), m.queues.clone(), m.registered_at),
        ("h2", vec!["default".to_string()], t0())
    );
    assert_eq!(m.last_heartbeat_at, t0(), "registration counts as a heartbeat");
}

// ---------------------------------------------------------------------------------------
// Retention

async fn prune(s: Arc<dyn JobStore>) {
    let done = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let live = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let recent = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.job_id, done);
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, 0, b"old output".to_vec())])).await;
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(2)).await;
    let l = claim_one(&s, w, at(3)).await;
    append_ok(&s, append(w, &l, vec![chunk(Stream::Stdout, 0, b"live output".to_vec())])).await;
    s.stop_job(recent, StopKind::Cancel, at(1000)).await.unwrap();

    assert_eq!(s.prune_finished(at(2)).await.unwrap(), 0, "ended at the cutoff, not before it");
    assert_eq!(s.prune_finished(at(500)).await.unwrap(), 1);
    assert_not_found(s.get_job(done).await, "a pruned job");
    let q = LogQuery { job_id: done, step: None, after: 0, max_bytes: 1 << 20 };
    assert!(s.read_logs(&q).await.unwrap().chunks.is_empty(), "its logs are gone too");
    assert_eq!(get(&s, live).await.row.state, JobState::Running, "running jobs are never pruned");
    assert_eq!(read_all(&s, live, None, 1 << 20).await.len(), 1);
    assert_eq!(get(&s, recent).await.row.state, JobState::Cancelled);
    assert_eq!(s.prune_finished(at(500)).await.unwrap(), 0);
    let ids: Vec<JobId> = s.list_jobs(&JobFilter::default()).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, [recent, live]);
}

fn revoke(id: JobId, terminate: bool, expires_at: Option<DateTime<Utc>>) -> RevokeRequest {
    RevokeRequest { job_id: id, terminate, signal: None, expires_at }
}

async fn durable_revokes(s: Arc<dyn JobStore>) {
    // A queued job: revoked at once, never claimed.
    let queued = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let out = s.revoke_jobs(vec![revoke(queued, false, None)], at(1)).await.unwrap().pop().unwrap().unwrap();
    assert!(out.changed && out.running.is_empty());
    assert_eq!(out.row.as_ref().map(|r| r.state), Some(JobState::Revoked));
    let w = worker(&s).await;
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "a revoked job never starts");
    assert!(get(&s, queued).await.steps.iter().all(|st| st.state == StepState::Revoked));

    // A running job with terminate: its attempt is flagged and returned.
    let running = submit(&s, JobSpec::new(vec![step("a")]), at(3)).await;
    let a = claim_one(&s, w, at(4)).await;
    let out = s.revoke_jobs(vec![revoke(running, true, None)], at(5)).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(
        out.running.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a.attempt_id, StopCause::Revoked)]
    );

    // Expiring revokes are pruned once expired; revokes without expiry stay.
    let expiring = submit(&s, JobSpec::new(vec![step("a")]), at(6)).await;
    s.revoke_jobs(vec![revoke(expiring, false, Some(at(100)))], at(7)).await.unwrap().pop().unwrap().unwrap();
    let ids: Vec<JobId> = s.list_revokes(at(8)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert!(ids.contains(&expiring) && ids.contains(&queued) && ids.contains(&running), "{ids:?}");
    assert_eq!(s.prune_revokes(at(101)).await.unwrap(), 1);
    let ids: Vec<JobId> = s.list_revokes(at(102)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert!(!ids.contains(&expiring) && ids.contains(&queued));
    assert_eq!(
        get(&s, expiring).await.row.state,
        JobState::Revoked,
        "pruning a revoke does not revive its job"
    );
    // Revoking an ended job records the revoke and changes nothing.
    let out = s.revoke_jobs(vec![revoke(queued, true, None)], at(103)).await.unwrap().pop().unwrap().unwrap();
    assert!(!out.changed);
}

async fn revoke_of_an_unknown_job_is_not_found(s: Arc<dyn JobStore>) {
    // Ids are issued at submit: a revoke of an id never issued could never match.
    let known = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let unknown = new_id();
    let out = s
        .revoke_jobs(vec![revoke(unknown, false, Some(at(100))), revoke(known, false, None)], at(1))
        .await
        .unwrap();
    match &out[0] {
        Err(StoreError::NotFound(m)) => assert!(m.contains(&unknown.to_string()), "{m}"),
        other => panic!("expected NotFound for an unknown id, got {other:?}"),
    }
    assert!(out[1].as_ref().is_ok_and(|o| o.changed), "the known job in the same call is revoked");
    let ids: Vec<JobId> = s.list_revokes(at(2)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert_eq!(ids, [known], "nothing is stored for the unknown id");
    // A job later stored under that id (only a test can choose ids) is not bound by it.
    let later = s
        .submit_jobs(vec![NewJob { id: unknown, spec: JobSpec::new(vec![step("a")]), now: at(3) }])
        .await
        .unwrap();
    assert!(later[0].is_ok());
    assert_eq!(get(&s, unknown).await.row.state, JobState::Queued);
}

fn key_revoke(key: &str, terminate: bool, expires_at: Option<DateTime<Utc>>) -> KeyRevokeRequest {
    KeyRevokeRequest { key: key.into(), terminate, signal: None, expires_at }
}

fn keyed(key: &str) -> JobSpec {
    let mut j = JobSpec::new(vec![step("a")]);
    j.idempotency_key = Some(key.into());
    j
}

async fn key_revokes_bind_later_jobs(s: Arc<dyn JobStore>) {
    // A key no job carries yet: stored, and binds the job submitted later with it.
    let out = s.revoke_keys(vec![key_revoke("nightly-1", false, None)], t0()).await.unwrap();
    assert!(out[0].as_ref().is_ok_and(|o| o.key == "nightly-1" && o.job.is_none()), "{out:?}");
    let id = submit(&s, keyed("nightly-1"), at(1)).await;
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Revoked, "a job submitted with a revoked key ends revoked");
    assert!(rec.steps.iter().all(|st| st.state == StepState::Revoked));
    let w = worker(&s).await;
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "it never starts");
    // Submitting the key again still answers with that job (idempotency holds).
    let again =
        s.submit_jobs(vec![NewJob { id: new_id(), spec: keyed("nightly-1"), now: at(3) }]).await.unwrap();
    assert_eq!(again[0].as_ref().map(|r| (r.id, r.created)).ok(), Some((id, false)));

    // A key a running job already carries: that job is revoked (and with terminate, stopped).
    let running = submit(&s, keyed("nightly-2"), at(4)).await;
    let a = claim_one(&s, w, at(5)).await;
    let out = s
        .revoke_keys(vec![key_revoke("nightly-2", true, None)], at(6))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = out.job.expect("the job carrying the key");
    assert_eq!(job.job_id, running);
    assert!(job.changed);
    assert_eq!(job.running.iter().map(|r| r.attempt_id).collect::<Vec<_>>(), [a.attempt_id]);

    // Expiry: an expired key revoke no longer binds, and is pruned.
    s.revoke_keys(vec![key_revoke("nightly-3", false, Some(at(100)))], at(7)).await.unwrap();
    let keys: Vec<String> = s.list_key_revokes(at(8)).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["nightly-3", "nightly-2", "nightly-1"], "newest first");
    assert!(s.list_key_revokes(at(101)).await.unwrap().iter().all(|r| r.key != "nightly-3"));
    assert_eq!(s.prune_revokes(at(101)).await.unwrap(), 1);
    let late = submit(&s, keyed("nightly-3"), at(102)).await;
    assert_eq!(get(&s, late).await.row.state, JobState::Queued, "an expired key revoke binds nothing");
}

async fn revoke_without_terminate_lets_the_step_finish(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let out = s.revoke_jobs(vec![revoke(id, false, None)], at(2)).await.unwrap().pop().unwrap().unwrap();
    assert!(out.changed && out.running.is_empty(), "without terminate nothing is stopped");
    let hb = s
        .heartbeat(
            Heartbeat { session: w, attempts: vec![a.attempt_id], draining: false, concurrency: None },
            at(3),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(hb.stop.is_empty(), "the running step is not told to stop: {:?}", hb.stop);
    let rec = get(&s, id).await;
    assert_eq!(
        (rec.row.state, step_of(&rec, "a").state, step_of(&rec, "a").attempts[0].status),
        (JobState::Revoked, StepState::Revoked, AttemptStatus::Running),
        "the step shows the job's end at once while its attempt runs on"
    );
    assert_eq!(rec.row.finished_at, None, "an attempt still runs");
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(4)).await;
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Revoked, Some(at(4))));
    let a_rec = step_of(&rec, "a");
    assert_eq!(a_rec.state, StepState::Revoked, "the step keeps the state it showed");
    assert_eq!(a_rec.attempts[0].status, AttemptStatus::Succeeded, "the attempt records its own outcome");
    assert_eq!(step_of(&rec, "b").state, StepState::Revoked, "no later step starts");
    assert!(claim(&s, w, 5, at(5)).await.is_empty());
}

/// A result that arrives late (server outage) ends its attempt at start + the run time its
/// worker measured, never later than its arrival; without one, at its arrival.
async fn late_results_keep_their_run_time(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b"), step("c")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 3, at(1)).await;
    assert_eq!(got.len(), 3);
    let with =
        |c: &ClaimedAttempt, run_ms| Completion { run_ms, ..completion(w, c, AttemptOutcome::Succeeded) };
    let results = s
        .complete(vec![with(&got[0], Some(2_000)), with(&got[1], Some(60_000)), with(&got[2], None)], at(10))
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let rec = get(&s, id).await;
    let ended = |c: &ClaimedAttempt| step_of(&rec, &c.step).attempts[0].finished_at;
    assert_eq!(ended(&got[0]), Some(at(3)), "start + its own run time, not the arrival");
    assert_eq!(ended(&got[1]), Some(at(10)), "never later than the arrival");
    assert_eq!(ended(&got[2]), Some(at(10)), "an older worker's result: its arrival");
}

async fn paused_queues(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    assert!(s.set_queue_paused("default", true, at(1)).await.unwrap());
    assert!(!s.set_queue_paused("default", true, at(1)).await.unwrap(), "pausing twice changes nothing");
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "nothing is claimed from a paused queue");
    let stats = s.queue_stats().await.unwrap();
    assert_eq!(stats, vec![QueueStats { queue: "default".into(), ready: 1, running: 0, paused: true }]);
    assert!(s.set_queue_paused("default", false, at(3)).await.unwrap());
    let c = claim_one(&s, w, at(4)).await;
    assert_eq!(c.job_id, id);
    let stats = s.queue_stats().await.unwrap();
    assert_eq!(stats, vec![QueueStats { queue: "default".into(), ready: 0, running: 1, paused: false }]);
}
