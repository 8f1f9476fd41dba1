//! Records going into and coming out of a [`crate::JobStore`]. Domain types only.

use crate::Result;
use chrono::{DateTime, Utc};
use rota_domain::{
    AttemptId, AttemptOutcome, AttemptStatus, JobId, JobSpec, JobState, SessionId, StepState, Stream,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A validated job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Id chosen by the caller (UUID v7).
    pub id: JobId,
    /// The document (validated).
    pub spec: JobSpec,
    /// Submission time.
    pub now: DateTime<Utc>,
}

/// Result of storing one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The stored job's id (an older job's when the idempotency key matched).
    pub id: JobId,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
}

/// Step counts of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepCountsRecord {
    /// All steps.
    pub total: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Running.
    pub running: u32,
    /// Failed, cancelled, revoked or skipped.
    pub failed: u32,
}

/// A job as listed.
#[derive(Clone, Debug)]
pub struct JobRow {
    /// Id.
    pub id: JobId,
    /// Its namespace.
    pub namespace: String,
    /// Optional name.
    pub name: Option<String>,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// Target (to decide `unschedulable`).
    pub target: rota_domain::Target,
    /// Stored state.
    pub state: JobState,
    /// Reason for the state.
    pub reason: Option<String>,
    /// Step counts.
    pub counts: StepCountsRecord,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job with everything about it.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// The listing fields.
    pub row: JobRow,
    /// The document as submitted.
    pub spec: JobSpec,
    /// Steps in document order.
    pub steps: Vec<StepRecord>,
}

/// A step and its attempts.
#[derive(Clone, Debug)]
pub struct StepRecord {
    /// Name.
    pub name: String,
    /// State.
    pub state: StepState,
    /// Reason.
    pub reason: Option<String>,
    /// Not claimable before.
    pub run_after: Option<DateTime<Utc>>,
    /// Attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// One attempt.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    /// Fencing id.
    pub id: AttemptId,
    /// 1-based number within the step.
    pub number: u32,
    /// Session that held it.
    pub session: SessionId,
    /// Worker name that held it.
    pub worker: String,
    /// Status.
    pub status: AttemptStatus,
    /// Outcome once ended.
    pub outcome: Option<AttemptOutcome>,
    /// Reason once ended.
    pub reason: Option<String>,
    /// Pid if recorded.
    pub pid: Option<u32>,
    /// Claimed at.
    pub started_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Lease end while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// What a succeeded attempt wrote to `$ROTA_OUTPUT`.
    pub outputs: std::collections::BTreeMap<String, String>,
}

impl AttemptRecord {
    /// Exit code, if the outcome carries one.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.outcome {
            Some(AttemptOutcome::Succeeded) => Some(0),
            Some(AttemptOutcome::Failed { exit_code, .. }) => *exit_code,
            _ => None,
        }
    }
}

/// Which jobs to list.
#[derive(Clone, Debug)]
pub struct JobFilter {
    /// Only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// Only these states (empty = all).
    pub states: Vec<JobState>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs whose name contains this text (case-sensitive).
    pub name: Option<String>,
    /// Only the runs of this schedule (jobs whose idempotency key is one of its fire keys,
    /// `schedule/NAME/…`).
    pub schedule: Option<String>,
    /// Only jobs older than this one (keyset paging: ids sort by submission time, so a page
    /// stays correct while new jobs arrive).
    pub before: Option<JobId>,
    /// At most this many, newest first.
    pub limit: u32,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            namespace: None,
            states: Vec::new(),
            queue: None,
            name: None,
            schedule: None,
            before: None,
            limit: 50,
        }
    }
}

/// Jobs that ended in one minute, by end state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// The end state.
    pub state: JobState,
    /// How many jobs ended so in that minute.
    pub jobs: u64,
}

/// Submit→start latency of the jobs whose first attempt started in one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Jobs whose first attempt started in that minute.
    pub started: u64,
    /// Their mean submit→start time, in milliseconds.
    pub mean_ms: f64,
    /// The longest of them, in milliseconds.
    pub max_ms: u64,
}

/// Fleet-wide throughput since a time, per minute (the dashboard's throughput page).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Throughput {
    /// Jobs ended per minute and end state, oldest first.
    pub finished: Vec<FinishedMinute>,
    /// Submit→start latency per minute, oldest first.
    pub latency: Vec<LatencyMinute>,
}

/// Why a job is being stopped by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// `rota job cancel`: ends `cancelled`.
    Cancel,
    /// `rota worker revoke`: ends `revoked`.
    Revoke,
}

/// Why a running attempt must stop: the domain's (its rules decide by it).
pub use rota_domain::StopCause;

/// A running attempt and who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningAttempt {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Its job.
    pub job_id: JobId,
    /// Its step.
    pub step: String,
    /// The session holding it.
    pub session: SessionId,
    /// Why it must stop.
    pub cause: StopCause,
}

/// Result of [`crate::JobStore::stop_job`].
#[derive(Clone, Debug)]
pub struct StopOutcome {
    /// The job after the call.
    pub row: JobRow,
    /// False when the job had already ended.
    pub changed: bool,
    /// Running attempts to stop now.
    pub running: Vec<RunningAttempt>,
}

/// A worker registering.
#[derive(Clone, Debug)]
pub struct WorkerRegistration {
    /// New session id.
    pub session: SessionId,
    /// SHA-256 (hex) of the session credential.
    pub token_hash: String,
    /// Its namespace: it claims only that namespace's jobs; names are unique in it.
    pub namespace: String,
    /// Worker name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Profile.
    pub profile: Option<String>,
    /// Version.
    pub version: String,
    /// Queues.
    pub queues: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Concurrency.
    pub concurrency: u32,
    /// Pid.
    pub pid: Option<u32>,
    /// The worker's persistent instance id (kept in its workspace). `None`: a worker too
    /// old to send one; it supersedes and is superseded as before instance ids existed.
    pub instance_id: Option<String>,
    /// Take the name over from a live session of another instance (`--replace`).
    pub replace: bool,
    /// A session not heard from for this long is stale: it no longer holds its name
    /// (the lease TTL, as for the `stale` state operators see).
    pub stale_after: Duration,
}

/// The live session that holds a worker name, when a registration is refused for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameHolder {
    /// The name.
    pub name: String,
    /// Its session.
    pub session: SessionId,
    /// Its instance id (`None`: a worker too old to send one).
    pub instance_id: Option<String>,
    /// Its host.
    pub host: String,
    /// When it was last heard from.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Result of a registration.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The live session with the same name that was replaced.
    pub superseded: Option<SessionId>,
    /// Attempts of the superseded session now lost.
    pub lost: Vec<LostAttempt>,
}

/// Stored session status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Registered and claiming.
    Active,
    /// Registered, not claiming.
    Draining,
    /// Unregistered or superseded.
    Offline,
}

/// A worker session.
#[derive(Clone, Debug)]
pub struct WorkerRecord {
    /// Session.
    pub session: SessionId,
    /// Its namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Profile.
    pub profile: Option<String>,
    /// Version.
    pub version: String,
    /// Queues.
    pub queues: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Concurrency (latest reported).
    pub concurrency: u32,
    /// Stored status (staleness is derived from `last_heartbeat_at` by the caller).
    pub status: SessionStatus,
    /// Registered at.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat (registration counts as one).
    pub last_heartbeat_at: DateTime<Utc>,
    /// Attempts it holds now.
    pub running: u32,
    /// Its persistent instance id (`None`: a worker too old to send one).
    pub instance_id: Option<String>,
}

/// A heartbeat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// Session.
    pub session: SessionId,
    /// Attempts the worker believes it holds.
    pub attempts: Vec<AttemptId>,
    /// Stopped claiming.
    pub draining: bool,
    /// Current concurrency, if changed.
    pub concurrency: Option<u32>,
}

/// Result of a heartbeat.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatOutcome {
    /// Leases renewed.
    pub renewed: Vec<AttemptId>,
    /// Attempts to stop, with why.
    pub stop: Vec<(AttemptId, StopCause)>,
}

/// A worker session waiting to claim, for [`crate::JobStore::submit_and_claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimer {
    /// The claiming session.
    pub session: SessionId,
    /// Most attempts it takes.
    pub max: u32,
}

/// What [`crate::JobStore::submit_and_claim`] did: one result per job, one per claimer.
#[derive(Debug)]
pub struct SubmittedAndClaimed {
    /// As [`crate::JobStore::submit_jobs`] returns them.
    pub submitted: Vec<Result<Submitted>>,
    /// The attempts each claimer got, in the claimers' order.
    pub claimed: Vec<Result<Vec<ClaimedAttempt>>>,
}

/// What [`crate::JobStore::complete_and_claim`] did: one result per completion, and the
/// claim made after them.
#[derive(Debug)]
pub struct CompletedAndClaimed {
    /// As [`crate::JobStore::complete`] returns them.
    pub completed: Vec<Result<CompletionRecorded>>,
    /// As [`crate::JobStore::claim`] returns it.
    pub claimed: Result<Vec<ClaimedAttempt>>,
}

/// A claimed attempt with what the worker needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedAttempt {
    /// Fencing id.
    pub attempt_id: AttemptId,
    /// Job.
    pub job_id: JobId,
    /// The job's namespace (the claiming worker's): where its secret references resolve.
    pub namespace: String,
    /// Step name.
    pub step: String,
    /// 1-based attempt number.
    pub number: u32,
    /// Script.
    pub run: String,
    /// Job env overlaid with step env: the plain values.
    pub env: BTreeMap<String, String>,
    /// The variables of that env a secret fills in, as references: the server resolves
    /// them when it hands the attempt to its worker (the store never holds a value).
    pub secret_env: BTreeMap<String, rota_domain::secret::SecretRef>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Memory limit.
    pub memory_limit: Option<u64>,
    /// Keep the attempt directory.
    pub keep_workspace: bool,
    /// Log cap in bytes.
    pub log_cap: u64,
    /// Queue it was claimed from.
    pub queue: String,
}

/// A finished attempt reported by its worker.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Reporting session.
    pub session: SessionId,
    /// Job (must match the attempt's).
    pub job_id: JobId,
    /// Step (must match the attempt's).
    pub step: String,
    /// Attempt.
    pub attempt_id: AttemptId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// How long it ran as its worker measured it; the attempt's end is then its start plus
    /// this (never later than now), not the time the result arrived.
    pub run_ms: Option<u64>,
    /// Random number in [0, 1) for retry jitter.
    pub jitter01: f64,
    /// What the step wrote to `$ROTA_OUTPUT` (`KEY=value`), stored with the attempt when it
    /// succeeded; the steps that need it see them as `ROTA_OUT_<STEP>_<KEY>`.
    pub outputs: std::collections::BTreeMap<String, String>,
}

impl Completion {
    /// The outputs a store records with the attempt: only a success's, and only when it
    /// wrote any (a failed attempt's partial outputs must never reach a needing step).
    pub fn outputs_to_record(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        (self.outcome == AttemptOutcome::Succeeded && !self.outputs.is_empty()).then_some(&self.outputs)
    }
}

/// What was recorded for a completion.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRecorded {
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Recorded status.
    pub status: AttemptStatus,
    /// Recorded outcome.
    pub outcome: AttemptOutcome,
    /// True when this repeated an earlier, identical completion.
    pub repeated: bool,
    /// True when the job reached a terminal state with this completion.
    pub job_finished: bool,
    /// The job's terminal state when `job_finished`, so the caller need not read the job
    /// back to announce its end (that read was a large share of the server's work per job).
    pub job_state: Option<JobState>,
    /// How many steps became claimable (dependents, retries).
    pub readied: u32,
}

/// An attempt marked lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostAttempt {
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Job.
    pub job_id: JobId,
    /// Step.
    pub step: String,
    /// Session that held it.
    pub session: SessionId,
    /// True if the step will run again.
    pub retried: bool,
}

/// Chunks of one attempt to append.
#[derive(Clone, Debug)]
pub struct LogAppend {
    /// Sending session (must hold the attempt).
    pub session: SessionId,
    /// Job.
    pub job_id: JobId,
    /// Step.
    pub step: String,
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Chunks in order.
    pub chunks: Vec<NewLogChunk>,
    /// Bytes of this attempt's output the worker dropped before sending (its log cap while
    /// unsent), in total since the attempt started: the largest value seen is kept, so a
    /// resent or reordered append never counts twice. 0 from workers that do not say.
    pub dropped: u64,
}

/// One chunk to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLogChunk {
    /// Stream.
    pub stream: Stream,
    /// Sequence number within (attempt, stream).
    pub seq: u64,
    /// Bytes.
    pub data: Vec<u8>,
}

/// A page request.
#[derive(Clone, Debug)]
pub struct LogQuery {
    /// Job.
    pub job_id: JobId,
    /// Only this step.
    pub step: Option<String>,
    /// After this cursor (0 = start).
    pub after: i64,
    /// Roughly at most this many data bytes (at least one chunk is returned).
    pub max_bytes: u64,
}

/// A stored chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// Position (increasing in storage order).
    pub cursor: i64,
    /// Step.
    pub step: String,
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Attempt number.
    pub attempt: u32,
    /// Stream.
    pub stream: Stream,
    /// Bytes.
    pub data: Vec<u8>,
}

/// A page of chunks.
#[derive(Clone, Debug, Default)]
pub struct LogPage {
    /// Chunks in storage order.
    pub chunks: Vec<StoredChunk>,
    /// Cursor for the next page (the last chunk's, or the request's if none).
    pub next_cursor: i64,
    /// Attempts whose output was not all kept, and why.
    pub truncated: Vec<LogCut>,
}

/// What was not kept of one attempt's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCut {
    /// Step.
    pub step: String,
    /// Attempt.
    pub attempt_id: AttemptId,
    /// Bytes cut from the head by the step's log cap (by the server, plus what the worker
    /// dropped before sending).
    pub cap_bytes: u64,
    /// Bytes deleted after the job finished, to keep the total log quota.
    pub quota_pruned_bytes: u64,
    /// New output not stored because the total log quota was full.
    pub quota_refused_bytes: u64,
}

/// How much of the total log quota is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogUsage {
    /// Bytes of log output stored now (live bytes, not file size).
    pub live_bytes: u64,
    /// The quota, if one is enforced.
    pub quota_bytes: Option<u64>,
    /// Bytes of finished jobs' output deleted to keep the quota, since the store opened.
    pub pruned_bytes: u64,
    /// Bytes of new output refused because the quota was full, since the store opened.
    pub refused_bytes: u64,
}

/// A revoke to record.
#[derive(Clone, Debug)]
pub struct RevokeRequest {
    /// The namespace the job must be in (a job of another one is not found).
    pub namespace: String,
    /// The job (it must exist: ids are issued at submit; revoke a key for later jobs).
    pub job_id: JobId,
    /// Also stop its running steps (signal, grace, KILL); otherwise they finish.
    pub terminate: bool,
    /// Signal for `terminate` (default TERM).
    pub signal: Option<i32>,
    /// Forget the revoke after this instant.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a revoke did.
#[derive(Clone, Debug)]
pub struct RevokeOutcome {
    /// The job.
    pub job_id: JobId,
    /// The job after the call (`None` only for revokes stored before unknown ids were
    /// refused).
    pub row: Option<JobRow>,
    /// True when a live job was revoked by this call.
    pub changed: bool,
    /// Running attempts to stop now (only with `terminate`).
    pub running: Vec<RunningAttempt>,
}

/// A stored revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeRecord {
    /// The job.
    pub job_id: JobId,
    /// Whether running steps were terminated.
    pub terminate: bool,
    /// Signal used for terminate.
    pub signal: Option<i32>,
    /// When it is forgotten (never if `None`).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A revoke of an idempotency key: binds the job submitted with that key, now or later.
#[derive(Clone, Debug)]
pub struct KeyRevokeRequest {
    /// The namespace whose jobs carry the key.
    pub namespace: String,
    /// The idempotency key.
    pub key: String,
    /// Also stop the job's running steps (only if it already runs).
    pub terminate: bool,
    /// Signal for `terminate` (default TERM).
    pub signal: Option<i32>,
    /// Forget the revoke after this instant if no job with the key was submitted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a key revoke did.
#[derive(Clone, Debug)]
pub struct KeyRevokeOutcome {
    /// The key.
    pub key: String,
    /// The job that already carries the key, revoked as by [`RevokeRequest`].
    pub job: Option<RevokeOutcome>,
}

/// A stored key revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRevokeRecord {
    /// The namespace whose jobs carry the key.
    pub namespace: String,
    /// The idempotency key.
    pub key: String,
    /// Whether running steps are terminated.
    pub terminate: bool,
    /// Signal used for terminate.
    pub signal: Option<i32>,
    /// When it is forgotten (never if `None`).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Depth and state of one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// The namespace the queue is in.
    pub namespace: String,
    /// Queue name.
    pub queue: String,
    /// Steps ready to be claimed (including ones waiting for a retry time).
    pub ready: u64,
    /// Steps running.
    pub running: u64,
    /// Paused by an operator.
    pub paused: bool,
    /// The oldest job with a ready step (its id tells when it was submitted).
    pub oldest_ready: Option<JobId>,
}

/// A control-plane credential: the tokens operators and joining workers present. The store
/// keeps only their SHA-256 hashes (hex), never the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// The operator token (`ROTA_TOKEN`, `admin.token`).
    Admin,
    /// The token workers join with (`ROTA_JOIN_TOKEN`, `join.token`).
    Join,
}

impl CredentialKind {
    /// Both kinds, admin first.
    pub const ALL: [CredentialKind; 2] = [CredentialKind::Admin, CredentialKind::Join];

    /// The stored name: `admin` or `join`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Admin => "admin",
            CredentialKind::Join => "join",
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CredentialKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "admin" => Ok(CredentialKind::Admin),
            "join" => Ok(CredentialKind::Join),
            other => Err(format!("unknown credential kind '{other}' (expected admin or join)")),
        }
    }
}

/// The control-plane credential hashes a store holds (or a caller proposes): the SHA-256
/// hex of each token, `None` for a kind the store holds none of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialHashes {
    /// Hash of the admin token.
    pub admin: Option<String>,
    /// Hash of the join token.
    pub join: Option<String>,
    /// Replaced hashes still in their grace (as stored: whether `until` has passed is the
    /// reader's check against its clock). Empty in what a caller proposes.
    pub previous: Vec<PreviousCredential>,
}

/// A replaced credential hash kept through a rotation's grace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousCredential {
    /// Which token it was.
    pub kind: CredentialKind,
    /// The replaced token's hash.
    pub hash: String,
    /// Accepted until then, refused after.
    pub until: DateTime<Utc>,
    /// The new token sealed under the control plane's key (the server's keyring), so a
    /// server can hand it to a holder of the old one during the grace. Never the token.
    pub handover: Option<String>,
}

/// A rotation that keeps the replaced hash for a while (`rota token rotate --grace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraceRotation {
    /// The new token's hash.
    pub hash: String,
    /// The replaced hash is accepted until then.
    pub until: DateTime<Utc>,
    /// The new token, sealed (see [`PreviousCredential::handover`]).
    pub handover: Option<String>,
}

/// What `JobStore::forget_worker` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// A worker of that name ever registered in that namespace.
    pub known: bool,
    /// The live sessions it ended (their credentials are refused as forgotten from now on).
    pub sessions: Vec<SessionId>,
    /// The attempts those sessions held, now lost (and retried where the policy says).
    pub lost: Vec<LostAttempt>,
    /// The name may not register again until unblocked.
    pub blocked: bool,
}

impl CredentialHashes {
    /// The hash of `kind`, if any.
    pub fn get(&self, kind: CredentialKind) -> Option<&str> {
        match kind {
            CredentialKind::Admin => self.admin.as_deref(),
            CredentialKind::Join => self.join.as_deref(),
        }
    }

    /// Sets the hash of `kind`.
    pub fn set(&mut self, kind: CredentialKind, hash: Option<String>) {
        match kind {
            CredentialKind::Admin => self.admin = hash,
            CredentialKind::Join => self.join = hash,
        }
    }
}
