//! Operator views of workers.

use chrono::{DateTime, Utc};
use rota_domain::SessionId;
use serde::{Deserialize, Serialize};

/// A worker's registration state, as the server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Heartbeating and claiming.
    Active,
    /// Heartbeating, not claiming (shutting down).
    Draining,
    /// No heartbeat for a lease TTL.
    Stale,
    /// Unregistered, superseded, or gone for long.
    Offline,
}

/// `GET /api/v1/workers` entry.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// Its namespace: names are unique per namespace.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// Worker name.
    pub name: String,
    /// Current session.
    pub session_id: SessionId,
    /// Host name.
    pub host: String,
    /// Profile.
    pub profile: Option<String>,
    /// Binary version.
    pub version: String,
    /// Queues.
    pub queues: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Concurrency limit.
    pub concurrency: u32,
    /// State.
    pub state: WorkerState,
    /// Attempts it holds.
    pub running: u32,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
    /// Its persistent instance id (absent for workers too old to send one).
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// `GET /api/v1/workers`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerList {
    /// Workers, live ones first, then by name.
    pub workers: Vec<WorkerView>,
}

/// `POST /api/v1/workers/{name}/forget`: end that worker's session everywhere.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForgetRequest {
    /// Also refuse the name's registrations (with the join token) until
    /// `POST /api/v1/workers/{name}/unblock`. Without it the worker may register again.
    #[serde(default)]
    pub block: bool,
}

/// What a forget did.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgetReply {
    /// The namespace it acted in.
    pub namespace: String,
    /// The worker's name.
    pub name: String,
    /// The live sessions ended (their credentials now get a `forgotten` 401).
    pub sessions: Vec<SessionId>,
    /// Attempts those sessions held, now lost (and retried where their policy says).
    pub lost_attempts: u32,
    /// The name may not register until unblocked.
    pub blocked: bool,
}

/// `POST /api/v1/workers/{name}/unblock`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnblockReply {
    /// The worker's name.
    pub name: String,
    /// It was blocked (and may register again now); false if it was not.
    pub was_blocked: bool,
}
