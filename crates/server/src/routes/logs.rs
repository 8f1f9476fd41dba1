//! `POST /worker/logs/frames`: the binary form of a log batch (see
//! `rota_api_types::logframes`). Step output arrives as raw bytes, with no base64 to
//! decode and no JSON string to scan, and is stored exactly as `POST /worker/logs` (JSON,
//! still served for workers of older releases) stores it.

use super::worker::store_log_batches;
use crate::auth::Session;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use rota_api_types::logframes;
use rota_api_types::worker::LogsBatchResponse;
use rota_domain::limits;

/// Output chunks of several attempts, coalesced by the worker, as binary frames.
#[utoipa::path(post, path = "/worker/logs/frames", tag = "worker", security(("worker" = [])),
    request_body(content = Vec<u8>, content_type = "application/vnd.rota.log-frames",
        description = "length-prefixed frames: the LogsBatchRequest with raw chunk bytes (layout in rota_api_types::logframes)"),
    responses((status = 200, body = LogsBatchResponse), (status = 400), (status = 401), (status = 403), (status = 413), (status = 415), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn append_log_frames(
    Session(me): Session,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogsBatchResponse>, ApiError> {
    // In the JSON error shape, as `ApiJson` answers for the other routes.
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        code: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        },
        message: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the server accepts".into()
        } else {
            format!("cannot read the request body: {rejection}")
        },
        pointer: None,
        retry_after: None,
    })?;
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if media.split(';').next().map(str::trim) != Some(logframes::CONTENT_TYPE) {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            ..ApiError::bad_request(format!("expected Content-Type {}", logframes::CONTENT_TYPE))
        });
    }
    let req = logframes::decode(&body, limits::MAX_CONCURRENCY)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The frames are copied out: the body can go before the store is waited on.
    drop(body);
    store_log_batches(&state, &me, req).await.map(Json)
}
