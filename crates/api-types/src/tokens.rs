//! Control-plane token rotation (`rota token rotate admin|join [--grace D]`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/tokens/{kind}/rotate` (`kind`: `admin` or `join`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateRequest {
    /// Keep accepting the replaced token this long (milliseconds; at most 7 days). 0 or
    /// absent: it is refused as soon as every server has reloaded (at once on this one).
    #[serde(default)]
    pub grace_ms: u64,
}

/// The new token. Shown once: the server keeps only its hash (and, during a join token's
/// grace, a sealed copy for the supervisors that still hold the old one).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateReply {
    /// `admin` or `join`.
    pub kind: String,
    /// The new token.
    pub token: String,
    /// The replaced token is accepted until then; absent without a grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<DateTime<Utc>>,
}
