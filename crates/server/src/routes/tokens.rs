//! `POST /api/v1/tokens/{kind}/rotate`: a new admin or join token for the whole control
//! plane, without a restart. The new hash is stored (durably) before the token is answered;
//! every server reloads on the bus's `Credentials` event (or its periodic re-read). With a
//! grace the replaced token keeps working until it ends, and a join token is also kept
//! sealed so that any server can hand it to a supervisor still linking with the old one.

use crate::auth::{Admin, hash_token, new_token};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use rota_api_types::tokens::{RotateReply, RotateRequest};
use rota_store::bus::Event;
use rota_store::{CredentialKind, GraceRotation};
use std::time::Duration;

/// The longest grace: a week covers a weekend's worth of hosts that were off.
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rotates the `kind` token.
#[utoipa::path(post, path = "/api/v1/tokens/{kind}/rotate", tag = "tokens", security(("admin" = [])),
    params(("kind" = String, Path, description = "admin or join")), request_body = RotateRequest,
    responses((status = 200, body = RotateReply), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn rotate(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(kind): ApiPath<String>,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Json<RotateReply>, ApiError> {
    let kind: CredentialKind = kind.parse().map_err(ApiError::bad_request)?;
    let grace = Duration::from_millis(req.grace_ms);
    if grace > MAX_GRACE {
        return Err(ApiError::bad_request(format!(
            "graceMs: {} ms is longer than the longest grace, 7 days",
            req.grace_ms
        )));
    }
    let token = new_token();
    let hash = hash_token(&token);
    let now = state.store.now();
    let grace_until = if grace.is_zero() {
        state.store.rotate_credential(kind, &hash, now).await?;
        None
    } else {
        let until = now + chrono::Duration::from_std(grace).map_err(ApiError::internal)?;
        // Only a join token is handed over (to supervisors); an admin token goes to whoever
        // asked, and is never kept in any form but its hash.
        let handover = match (kind, &state.config.secret_key) {
            (CredentialKind::Join, Some(ring)) => Some(ring.seal_token(kind.as_str(), &token)),
            _ => None,
        };
        state.store.rotate_credential_with_grace(kind, &GraceRotation { hash, until, handover }, now).await?;
        Some(until)
    };
    // Here at once; the other servers when the bus tells them (or within their re-read).
    state.auth.reload_credentials(state.store.as_ref()).await?;
    state.publish(vec![Event::Credentials]);
    tracing::info!(%kind, grace_ms = req.grace_ms, "token rotated");
    Ok(Json(RotateReply { kind: kind.as_str().to_string(), token, grace_until }))
}
