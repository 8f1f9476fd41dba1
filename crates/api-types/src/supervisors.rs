//! The supervisor link (`POST /supervisor/link`): a background worker's supervisor reports
//! its local state to the server and long-polls for a heal; and the fleet views built on
//! those reports (`GET /api/v1/supervisors`, `POST /api/v1/workers/heal`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most bytes of a reported last error (a report travels on the bus between servers).
pub const MAX_REPORTED_ERROR: usize = 2000;

/// A supervisor's local state, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorState {
    /// Its worker is starting (not registered yet).
    Starting,
    /// Its worker runs.
    Running,
    /// Its worker exited and is restarted after a delay.
    Restarting,
    /// Crash loop or bad configuration: nothing runs until a heal.
    Failed,
    /// Stopped on purpose (an operator's stop or shutdown).
    Stopped,
}

impl SupervisorState {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorState::Starting => "starting",
            SupervisorState::Running => "running",
            SupervisorState::Restarting => "restarting",
            SupervisorState::Failed => "failed",
            SupervisorState::Stopped => "stopped",
        }
    }
}

/// One heal's progress on the supervisor doing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealPhase {
    /// The failed state was reset and the worker is being started with the saved settings.
    Starting,
    /// The worker registered again.
    Healed,
    /// It did not come back (the error says why).
    Failed,
}

/// What became of a heal the server sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealProgress {
    /// The heal's id (the server's command).
    pub id: Uuid,
    /// Where it is.
    pub phase: HealPhase,
    /// The healed worker's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A supervisor's report. Keyed by host and instance key (`profile-…`, `node-…`), never by
/// the worker's name, so it never clashes with its worker's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorReport {
    /// The host it runs on.
    pub host: String,
    /// Its instance key on that host (one background worker per host and profile).
    pub key: String,
    /// This supervisor run's id (a new one per `start` or `heal` on the host).
    pub instance_id: String,
    /// Its worker's namespace.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// Its worker's name, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Its local state.
    pub state: SupervisorState,
    /// How the worker last ended (`exited with code 1`, `was killed by signal 9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The last error lines (at most [`MAX_REPORTED_ERROR`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// The last heal the server sent, and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<HealProgress>,
}

/// `POST /supervisor/link`: the report, and how long to wait for a command.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkRequest {
    /// The supervisor's state now.
    pub report: SupervisorReport,
    /// Wait up to this long for a command (at most 30 s; 0: answer at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to a link call: a heal to do, if any.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkReply {
    /// Reset the failed state and start the worker with its saved settings; report the
    /// progress under this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<Uuid>,
    /// Report again within this long even when nothing changed.
    pub report_every_ms: u64,
    /// The join token was rotated and this link still presents the replaced one (in its
    /// grace): the new token, for the supervisor to save in its 0600 token file so that its
    /// worker's next registration uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// A supervisor as the server last heard from it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorView {
    /// Its last report.
    #[serde(flatten)]
    pub report: SupervisorReport,
    /// How long ago it reported.
    pub report_age_ms: u64,
    /// It has not reported for three report intervals: its host may be down or cut off.
    pub stale: bool,
}

/// `GET /api/v1/supervisors`: every supervisor heard from, by host and key.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SupervisorList {
    /// The supervisors.
    pub supervisors: Vec<SupervisorView>,
}

/// `POST /api/v1/workers/heal`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetHealRequest {
    /// Only say what would be healed.
    #[serde(default)]
    pub dry_run: bool,
    /// How long to wait for each heal's outcome (default 60 s, at most 300 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Only this worker (its name, or its supervisor's key when it has none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// One event of a fleet heal, in order: `detected` (dry run) or `starting` then `healed` /
/// `failed` per worker, then `done`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealEvent {
    /// `detected`, `starting`, `healed`, `failed` or `done`.
    pub phase: String,
    /// The host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The worker (its name, else the instance key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it needed healing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// An error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The healed worker's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `done`: how many were healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed: Option<usize>,
    /// `done`: how many failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
}

/// The answer to a fleet heal: its events, in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetHealResponse {
    /// The events.
    pub events: Vec<HealEvent>,
}
