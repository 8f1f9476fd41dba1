//! `GET /healthz/detail` (admin): who this server is and who leads the control plane.

use crate::jobs::LogQuotaUse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One server process of the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerIdentity {
    /// This start's id (a fresh UUID v7 at every start).
    pub id: Uuid,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// `GET /healthz/detail` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDetail {
    /// `ok` when the server is serving.
    pub status: String,
    /// The server's rota version.
    pub version: String,
    /// The server that answered.
    pub server: ServerIdentity,
    /// The server that runs the loops that must run once (lease expiry, deadlines,
    /// retention); null while nobody leads.
    pub leader: Option<ServerIdentity>,
    /// The server that answered leads.
    pub leads: bool,
    /// Use of the total log quota.
    pub logs: LogQuotaUse,
}
