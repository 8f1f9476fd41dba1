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
}
