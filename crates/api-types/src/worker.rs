//! The worker protocol: register, heartbeat, control (long-poll), claim (long-poll, batch),
//! start, complete (single and batch) and logs (single and batch). Every call but register
//! carries the session credential returned by register; every attempt-scoped call carries
//! the attempt's fencing id and is refused with 409 when the caller does not hold it.

use crate::Bytes64;
use rota_domain::{AttemptId, AttemptOutcome, AttemptStatus, JobId, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// `POST /worker/register` (join token).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The protocol's major version ([`rota_domain::PROTOCOL_VERSION`]): the server
    /// refuses another major.
    pub protocol_version: u32,
    /// The protocol's minor version ([`rota_domain::PROTOCOL_MINOR`]); absent from workers
    /// older than minor versions (read as 0). Never refused.
    #[serde(default)]
    pub protocol_minor: u32,
    /// Worker name. A live session of the same name and instance (same `instanceId` and
    /// host) is superseded; one held by another instance is refused with 409
    /// [`NAME_HELD`] unless `replace`. Unique per namespace; never starts with `@`.
    pub name: String,
    /// The namespace the worker belongs to: it claims only that namespace's jobs and is
    /// governed by its pools and configs. Absent (older workers): `default`.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// Host name the worker runs on.
    pub host: String,
    /// Local profile (`default` unless `--profile`).
    #[serde(default)]
    pub profile: Option<String>,
    /// rota version of the worker binary.
    pub version: String,
    /// Queues it claims from.
    pub queues: Vec<String>,
    /// Tags it carries (jobs may require tags).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Concurrent steps it runs at most.
    pub concurrency: u32,
    /// Optional features it supports.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Its process id, for operators.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Its persistent instance id (kept in its workspace). Absent from older workers,
    /// which supersede a live session of their name as before.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Take the name over from a live session of another instance (`--replace`). Sent on
    /// a worker's first registration only, never when it registers again.
    #[serde(default)]
    pub replace: bool,
}

/// Error code of a registration refused because a live session of another instance holds
/// the name (HTTP 409). The message names the holder's host, instance and last heartbeat.
pub const NAME_HELD: &str = "name_held";

/// The error code of a 401 answered to the credential of a session an operator forgot
/// (`rota worker forget`): the worker kills its steps at once and exits (configuration).
pub const FORGOTTEN: &str = "forgotten";

/// The error code of a 403 answered to a registration under a name forgotten with
/// `--block`: the worker exits (configuration) until an operator unblocks the name.
pub const BLOCKED: &str = "blocked";

/// Reply to register.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// This session.
    pub session_id: SessionId,
    /// Bearer credential for this session only.
    pub credential: String,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Lease length: an attempt not renewed for this long is lost.
    pub lease_ttl_ms: u64,
    /// The server's protocol major version.
    pub protocol_version: u32,
    /// The server's protocol minor version.
    #[serde(default)]
    pub protocol_minor: u32,
    /// The session this registration replaced, if the name was live.
    #[serde(default)]
    pub superseded: Option<SessionId>,
    /// Revokes in force, so a worker that starts later holds them too.
    #[serde(default)]
    pub revoked: Vec<JobId>,
    /// For the revokes of `revoked` that expire: how long from now (the worker drops them
    /// then, by its own clock).
    #[serde(default)]
    pub revoke_expires_in_ms: BTreeMap<JobId, u64>,
}

/// `POST /worker/heartbeat`: renews the leases of the attempts the worker holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// Attempts the worker is running.
    pub attempts: Vec<AttemptId>,
    /// True once the worker stopped claiming (draining).
    #[serde(default)]
    pub draining: bool,
    /// Current concurrency limit (changes under autoscaling).
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// Reply to heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// Attempts whose lease was renewed.
    pub renewed: Vec<AttemptId>,
    /// Attempts the worker must stop now (cancelled, revoked, or no longer its own).
    pub stop: Vec<StopOrder>,
    /// Lease length now in force.
    pub lease_ttl_ms: u64,
}

/// Why an attempt must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `rota job cancel`.
    Cancelled,
    /// `rota worker revoke --terminate`.
    Revoked,
    /// The job's deadline passed.
    Deadline,
    /// The worker no longer holds it (lease expired, superseded, finished elsewhere).
    NotHeld,
}

/// Stop one attempt: signal its process group, wait `graceMs`, then KILL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopOrder {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Why.
    pub reason: StopReason,
    /// Signal to send first (default TERM = 15).
    #[serde(default)]
    pub signal: Option<i32>,
}

/// `POST /worker/control`: long-poll for commands, carrying replies to earlier ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlRequest {
    /// How long the server may hold the call when no command is pending (capped at 30 s).
    #[serde(default)]
    pub wait_ms: u64,
    /// Replies to commands received earlier.
    #[serde(default)]
    pub replies: Vec<ControlReply>,
}

/// Reply to control: the commands pending for this session (possibly none).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlResponse {
    /// Commands in the order they were issued.
    pub commands: Vec<ControlCommand>,
}

/// A command for one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlCommand {
    /// Echoed in the reply.
    pub id: Uuid,
    /// What to do.
    pub command: Command,
}

/// The commands a worker understands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Answer with [`Reply::Pong`].
    Ping,
    /// Stop an attempt (cancel, revoke --terminate, deadline).
    Stop(StopOrder),
    /// Answer with [`Reply::Inspect`].
    Inspect,
    /// Answer with [`Reply::Stats`].
    Stats,
    /// Shut down in this mode (the background supervisor does not restart it).
    Shutdown {
        /// warm, soft or hard.
        mode: crate::fleet::ShutdownMode,
    },
    /// Jobs revoked: never start them (the server refuses their claims too).
    Revoke {
        /// The jobs.
        jobs: Vec<JobId>,
        /// The revoke expires this long from now: the worker then forgets it.
        #[serde(default, rename = "expiresInMs", skip_serializing_if = "Option::is_none")]
        expires_in_ms: Option<u64>,
    },
}

/// A worker's answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlReply {
    /// The command's id.
    pub id: Uuid,
    /// The answer.
    pub reply: Reply,
}

/// Answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to ping.
    Pong {
        /// Worker name.
        name: String,
        /// Host name.
        host: String,
    },
    /// Answer to inspect.
    Inspect {
        /// Steps running now.
        in_flight: Vec<crate::fleet::InFlight>,
        /// Revoked jobs the worker knows of.
        revoked: Vec<JobId>,
    },
    /// Answer to stats.
    Stats(crate::fleet::WorkerStats),
    /// The command was carried out.
    Done,
    /// The command could not be carried out.
    Error {
        /// Why.
        message: String,
    },
}

/// `POST /worker/pool`: which declared `WorkerPool` is in force for the calling worker. The
/// server answers from the worker's name, host and own tags, and makes the queues the
/// session claims from the pool's (or `queues`, the worker's own, when no pool sets any).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolQuery {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// The tags it was started with (a pool's own tags never select it).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The queues it was started with.
    pub queues: Vec<String>,
}

/// Reply to `POST /worker/pool`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolReply {
    /// The pool in force (`null`: none matches; the worker's own settings apply).
    #[serde(default)]
    pub in_force: Option<rota_domain::pool::InForce>,
    /// The queues the session claims from now.
    pub queues: Vec<String>,
}

/// `POST /worker/configs`: the declared `WorkerConfig`s that apply to the calling worker,
/// with what became of the ones it applied last (the server records `Degraded` on them).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigQuery {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// The tags it was started with.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Outcomes of applying configs since the last query.
    #[serde(default)]
    pub results: Vec<ConfigResult>,
}

/// What applying one config's generation on one worker came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigResult {
    /// The config.
    pub name: String,
    /// The generation applied.
    pub generation: i64,
    /// Files written and setup succeeded.
    pub ok: bool,
    /// The setup's exit code, if it ran and exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// What happened: the last lines of a failed setup's output, or why it could not run.
    #[serde(default)]
    pub message: String,
}

/// Reply to `POST /worker/configs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReply {
    /// Every config that applies, in the order to apply them (by name).
    pub configs: Vec<rota_domain::hostconfig::Matched>,
}

/// `POST /worker/jobs/claim`: up to `max` steps, waiting up to `waitMs` if none is ready.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    /// Free slots: the most attempts to hand out.
    pub max: u32,
    /// Long-poll time when nothing is claimable (capped at 30 s).
    #[serde(default)]
    pub wait_ms: u64,
}

/// Reply to claim.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// Attempts, already marked running and leased to the caller.
    pub attempts: Vec<ClaimedStep>,
}

/// Everything a worker needs to run one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedStep {
    /// Fencing id: carry it on every call about this attempt.
    pub attempt_id: AttemptId,
    /// The job.
    pub job_id: JobId,
    /// The step's name.
    pub step: String,
    /// 1-based attempt number of this step.
    pub attempt: u32,
    /// Shell script for `sh -c`.
    pub run: String,
    /// The job's env overlaid with the step's env (the worker adds PATH, HOME, ROTA_*),
    /// secret references resolved for this attempt.
    pub env: BTreeMap<String, String>,
    /// The variables of `env` a secret filled in: the worker masks their values in the
    /// step's output and refuses them in `$ROTA_OUTPUT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Kill the group after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Kill the group past this many bytes of memory.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// Keep the attempt directory afterwards.
    #[serde(default)]
    pub keep_workspace: bool,
    /// Log cap for this attempt, in bytes.
    pub log_cap: u64,
    /// The queue it was claimed from.
    #[serde(default)]
    pub queue: Option<String>,
}

/// `POST /worker/jobs/{id}/steps/{step}/start`: records the step's pid (optional call).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Pid (= pgid) of the step's `sh`.
    pub pid: u32,
}

/// `POST /worker/jobs/{id}/steps/{step}/complete`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Final log chunks not yet sent, stored before the result.
    #[serde(default)]
    pub logs: Vec<LogChunk>,
    /// Bytes of this attempt's output the worker dropped before sending (its log cap while
    /// the output was unsent), in total since the attempt started. The server keeps the
    /// largest total it was told and counts it in the attempt's cut. Absent (0) from older
    /// workers.
    #[serde(default)]
    pub dropped_bytes: u64,
    /// How long the step ran, measured by the worker (claim to exit), in milliseconds: a
    /// result delivered late (after a server outage) keeps the step's own duration. Older
    /// workers omit it; the server then uses the time it received the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// What a succeeded step wrote to `$ROTA_OUTPUT`, as `KEY=value` pairs (at most
    /// 64 KiB); the steps that need it see them as `ROTA_OUT_<STEP>_<KEY>`. Older workers
    /// send none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// Result of a complete: what is recorded for the attempt (the same on a repeat).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteResponse {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Recorded status.
    pub status: AttemptStatus,
    /// Recorded outcome.
    pub outcome: AttemptOutcome,
    /// True when this call repeated an already recorded completion.
    pub repeated: bool,
}

/// `POST /worker/jobs/complete`: several results in one call.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteBatchRequest {
    /// One entry per attempt.
    pub results: Vec<CompleteItem>,
    /// Slots these results free that the worker would fill again at once (protocol minor
    /// 2): after recording the results, the server claims up to this many attempts for
    /// the session as `POST /worker/jobs/claim` does (never more than there are results,
    /// never waiting) and returns them in [`CompleteBatchResponse::claimed`]; the worker
    /// starts them in those slots. 0 (absent, older workers): no claim. Older servers
    /// ignore it and return nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One entry of a batch complete.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteItem {
    /// The job.
    pub job_id: JobId,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Final log chunks.
    #[serde(default)]
    pub logs: Vec<LogChunk>,
    /// Bytes of this attempt's output the worker dropped before sending (its log cap while
    /// the output was unsent), in total since the attempt started. The server keeps the
    /// largest total it was told and counts it in the attempt's cut. Absent (0) from older
    /// workers.
    #[serde(default)]
    pub dropped_bytes: u64,
    /// How long the step ran, measured by the worker, in milliseconds (see
    /// [`CompleteRequest::run_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// What the step wrote to `$ROTA_OUTPUT` (see [`CompleteRequest::outputs`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// Reply to a batch complete, one entry per request entry, in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteBatchResponse {
    /// Per-entry results.
    pub results: Vec<ItemResult<CompleteResponse>>,
    /// What the request's `claim` took: attempts already marked running and leased to the
    /// caller, as a claim returns them. Empty when nothing was asked or nothing is ready
    /// (and for a draining or ended session).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimed: Vec<ClaimedStep>,
}

/// One entry's result inside a batch: `status` is the HTTP status the single call would
/// have returned (200, 404, 409, ...).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub struct ItemResult<T> {
    /// HTTP status of this entry.
    pub status: u16,
    /// The result when `status` is 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// The error when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub use rota_domain::Stream;

/// Raw output bytes. `seq` counts chunks per attempt and stream from 0; a chunk sent
/// twice (retries) is stored once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    /// stdout or stderr.
    pub stream: Stream,
    /// Sequence number within (attempt, stream).
    pub seq: u64,
    /// The bytes, exactly as the step wrote them.
    pub data: Bytes64,
}

/// `POST /worker/jobs/{id}/logs`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsRequest {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The step.
    pub step: String,
    /// Chunks in order.
    pub chunks: Vec<LogChunk>,
    /// Bytes of this attempt's output the worker dropped before sending (its log cap while
    /// the output was unsent), in total since the attempt started. The server keeps the
    /// largest total it was told and counts it in the attempt's cut. Absent (0) from older
    /// workers.
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// `POST /worker/logs`: chunks of several attempts, coalesced by the worker.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsBatchRequest {
    /// One entry per attempt.
    pub batches: Vec<LogBatch>,
}

/// Chunks of one attempt.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogBatch {
    /// The job.
    pub job_id: JobId,
    /// The step.
    pub step: String,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Chunks in order.
    pub chunks: Vec<LogChunk>,
    /// Bytes of this attempt's output the worker dropped before sending (its log cap while
    /// the output was unsent), in total since the attempt started. The server keeps the
    /// largest total it was told and counts it in the attempt's cut. Absent (0) from older
    /// workers.
    #[serde(default)]
    pub dropped_bytes: u64,
}

/// Reply to a batch logs call, one entry per batch.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsBatchResponse {
    /// Per-entry results.
    pub results: Vec<ItemResult<Empty>>,
}

/// `POST /worker/unregister`: the worker leaves cleanly; the body is empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnregisterRequest {}

/// An empty JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Empty {}
