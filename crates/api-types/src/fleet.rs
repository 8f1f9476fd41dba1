//! Fleet control bodies: operator commands fanned out to workers (ping, inspect, stats,
//! shutdown), durable revokes, and paused queues.

use crate::worker::Reply;
use chrono::{DateTime, Utc};
use rota_domain::{JobId, SessionId};
use serde::{Deserialize, Serialize};

/// How a worker stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// Stop claiming, let running steps finish (bounded by the drain timeout, then soft).
    Warm,
    /// Terminate running steps (TERM, grace, KILL), then exit.
    Soft,
    /// Kill running steps at once, then exit.
    Hard,
}

/// The command an operator sends to workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FleetCommand {
    /// Liveness and round trip.
    Ping,
    /// Steps in flight (and revokes held).
    Inspect,
    /// Concurrency, counters, uptime, memory.
    Stats,
    /// Stop the worker (needs `mode`).
    Shutdown,
}

/// `POST /api/v1/workers/control`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetRequest {
    /// What to send.
    pub command: FleetCommand,
    /// Worker names; empty = every live worker.
    #[serde(default)]
    pub workers: Vec<String>,
    /// How long to collect replies (default 1000 ms, at most 30 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// For `shutdown`.
    #[serde(default)]
    pub mode: Option<ShutdownMode>,
}

/// Replies collected until the timeout; workers that did not answer are named.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetResponse {
    /// One entry per worker that answered, by name.
    pub replies: Vec<WorkerReply>,
    /// Workers that were asked (or named) and did not answer in time, with why.
    pub no_reply: Vec<NoReply>,
}

/// One worker's answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReply {
    /// Worker name.
    pub worker: String,
    /// Its host.
    pub host: String,
    /// Its session.
    pub session_id: SessionId,
    /// Server → worker → server round trip.
    pub rtt_ms: f64,
    /// The answer.
    pub reply: Reply,
}

/// A worker that did not answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoReply {
    /// Worker name.
    pub worker: String,
    /// `timeout`, `stale` (no recent heartbeat), `offline` or `unknown`.
    pub why: String,
}

/// A step in flight on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    /// Job.
    pub job_id: JobId,
    /// Step.
    pub step: String,
    /// Attempt number.
    pub attempt: u32,
    /// Fencing id.
    pub attempt_id: rota_domain::AttemptId,
    /// Pid of the step's shell.
    pub pid: Option<u32>,
    /// How long it has run.
    pub running_ms: u64,
    /// Queue it came from.
    pub queue: Option<String>,
}

/// Worker counters for `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// Configured maximum concurrency (autoscale MAX, or the fixed concurrency).
    pub max_concurrency: u32,
    /// Configured minimum (autoscale MIN, or the fixed concurrency).
    pub min_concurrency: u32,
    /// Concurrency in force now.
    pub active_concurrency: u32,
    /// Steps running now.
    pub in_flight: u32,
    /// Steps finished since start.
    pub processed: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which did not.
    pub failed: u64,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Resident memory of the worker process.
    pub rss_bytes: u64,
    /// Queues it claims from.
    pub queues: Vec<String>,
    /// The `WorkerPool` whose settings it runs with, if one matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// That pool's generation it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_generation: Option<i64>,
    /// The worker configs it applied (`name@generation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
    /// Why it takes no work (a worker config's setup failed), if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// `POST /api/v1/revokes`: jobs by id, and idempotency keys (binding jobs submitted later
/// with them); at least one of either.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRequest {
    /// Jobs to revoke (ids the server issued: an unknown id is 404).
    #[serde(default)]
    pub jobs: Vec<JobId>,
    /// Idempotency keys to revoke: the job carrying one now, or submitted later with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Also stop running steps (signal, grace, KILL).
    #[serde(default)]
    pub terminate: bool,
    /// Signal for terminate (default 15, TERM).
    #[serde(default)]
    pub signal: Option<i32>,
    /// Forget the revoke after this many ms (workers drop it then too; a key revoke then
    /// no longer binds later jobs).
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// Reply to a revoke: one entry per job and per key, in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    /// Per job.
    pub results: Vec<RevokeResult>,
    /// Per key (absent when no key was revoked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRevokeResult>,
}

/// What a revoke did to one idempotency key.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRevokeResult {
    /// The key.
    pub key: String,
    /// The job that already carries the key, revoked by this call (`null`: none yet; the
    /// job submitted later with the key is revoked at submit).
    pub job: Option<RevokeResult>,
}

/// A key revoke in force.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRevokeView {
    /// The namespace whose jobs carry the key.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// The idempotency key.
    pub key: String,
    /// Whether running steps are terminated.
    pub terminate: bool,
    /// Signal used.
    pub signal: Option<i32>,
    /// When it is forgotten.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// What a revoke did to one job.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResult {
    /// The job.
    pub job_id: JobId,
    /// Its state now.
    pub state: Option<String>,
    /// True when a live job was revoked by this call.
    pub changed: bool,
    /// Running steps told to stop.
    pub terminated: u32,
}

/// A revoke in force.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeView {
    /// The job.
    pub job_id: JobId,
    /// Whether running steps were terminated.
    pub terminate: bool,
    /// Signal used.
    pub signal: Option<i32>,
    /// When it is forgotten.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// `GET /api/v1/revokes`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeList {
    /// Newest first.
    pub revokes: Vec<RevokeView>,
    /// Key revokes, newest first.
    #[serde(default)]
    pub keys: Vec<KeyRevokeView>,
}

/// One queue's depth and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    /// The namespace the queue is in.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// Queue name.
    pub queue: String,
    /// Steps waiting to be claimed.
    pub ready: u64,
    /// Steps running.
    pub running: u64,
    /// Paused by an operator.
    pub paused: bool,
    /// When the job of the oldest waiting step was submitted (none waiting: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api/v1/queues`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueList {
    /// By name.
    pub queues: Vec<QueueView>,
}
