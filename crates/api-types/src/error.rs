//! The body of every error reply.

use serde::{Deserialize, Serialize};

/// `{"error": {"code": "conflict", "message": "..."}}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `name_held`, `payload_too_large`, `unprocessable`, `internal`.
    pub code: String,
    /// For people: what was wrong and where.
    pub message: String,
    /// Where in the request body, as a JSON pointer (`/documents/2/spec/steps/0/run`), when
    /// one field is to blame; clients map it back to their own file's line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}
