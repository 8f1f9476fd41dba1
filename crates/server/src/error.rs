//! [`ApiError`]: every failure a handler returns, mapped to a status and the JSON error
//! body. Bad input is answered as is and not logged; internal errors become a generic 500
//! and are logged once here; a full disk is a 507 naming the path (the store logs it once
//! per episode, not per request).

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use rota_api_types::ErrorBody;
use rota_api_types::error::ErrorDetail;
use rota_store::{ConflictKind, StoreError};

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`bad_request`, `conflict`, ...).
    pub code: &'static str,
    /// Message for people.
    pub message: String,
    /// The request body's field to blame, as a JSON pointer, if one is.
    pub pointer: Option<String>,
    /// Seconds to wait before retrying (a 429's `Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 400 for input over a limit (or malformed), naming the field and the limit.
    pub fn limit(e: rota_domain::limits::LimitError) -> Self {
        Self::bad_request(e.to_string())
    }
    /// 400 blaming the request body's field at `pointer` (a JSON pointer).
    pub fn invalid_at(pointer: String, message: impl Into<String>) -> Self {
        Self { pointer: Some(pointer), ..Self::bad_request(message) }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 409 `name_held`: a registration named a worker whose live session belongs to
    /// another instance. Names the holder so the operator can find it.
    pub fn name_held(h: &rota_store::NameHolder) -> Self {
        let age = chrono::Utc::now().signed_duration_since(h.last_heartbeat_at);
        let secs = age.num_milliseconds().max(0) as f64 / 1000.0;
        Self {
            status: StatusCode::CONFLICT,
            code: rota_api_types::worker::NAME_HELD,
            message: format!(
                "worker name \"{}\" is held by a live worker on host {} (instance {}, last heartbeat {secs:.1}s \
                 ago); stop it, pick another --name, or pass --replace to take the name over",
                h.name,
                h.host,
                h.instance_id.as_deref().unwrap_or("unknown"),
            ),
            pointer: None,
            retry_after: None,
        }
    }
    /// 507 `storage_full`: the device holding `path` has no space left. Not logged here:
    /// the store says it once when writes start failing, not once per request.
    pub fn storage_full(path: &std::path::Path, detail: &str) -> Self {
        Self {
            status: StatusCode::INSUFFICIENT_STORAGE,
            code: "storage_full",
            message: format!(
                "the server is out of disk space: no space left on the device holding {} ({detail}); \
                 nothing was stored. Free space on that filesystem, then retry",
                path.display()
            ),
            pointer: None,
            retry_after: None,
        }
    }
    /// 503 `unavailable` (with `Retry-After`): the database cannot be reached right now.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "database unavailable: answering 503");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: format!(
                "the database cannot be reached right now ({detail}); nothing was changed. Retry in \
                 a moment"
            ),
            pointer: None,
            retry_after: None,
        }
    }
    /// 401 `forgotten`: the credential of a session an operator forgot (`rota worker
    /// forget`); the worker stops its steps and exits rather than registering again.
    pub fn forgotten() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: rota_api_types::worker::FORGOTTEN,
            message: "this worker was forgotten by an operator (rota worker forget): its session and \
                      credential have ended"
                .into(),
            pointer: None,
            retry_after: None,
        }
    }
    /// 429 `too_many_attempts` (with `Retry-After`): this address failed to authenticate too
    /// often; the message says how long to wait.
    pub fn too_many_attempts(wait: std::time::Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_attempts",
            message: format!(
                "too many failed authentications from this address: retry in {} s",
                wait.as_secs().max(1)
            ),
            pointer: None,
            retry_after: Some(wait.as_secs().max(1)),
        }
    }
    /// 500 (the detail is logged, not sent).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
            pointer: None,
            retry_after: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::not_found(m),
            // Every kind is a 409 the client resolves by reading the current state again;
            // matched one by one so that a new kind must be decided here.
            StoreError::Conflict(
                ConflictKind::NotHeld
                | ConflictKind::Ended
                | ConflictKind::WrongAttempt
                | ConflictKind::Exists
                | ConflictKind::JobState
                | ConflictKind::SecretKey,
                m,
            ) => Self::conflict(m),
            StoreError::Conflict(ConflictKind::Blocked, m) => Self {
                status: StatusCode::FORBIDDEN,
                code: rota_api_types::worker::BLOCKED,
                message: m,
                pointer: None,
                retry_after: None,
            },
            StoreError::Invalid(m) => Self::bad_request(m),
            StoreError::NameHeld(h) => Self::name_held(&h),
            StoreError::StorageFull { path, detail } => Self::storage_full(&path, &detail),
            StoreError::Unavailable(m) => Self::unavailable(m),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_string(), message: self.message, pointer: self.pointer },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // Every 503 says when to come back; rota's clients retry (or try another server).
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: malformed JSON → 400 naming the problem
/// (with line and column), oversized body → 413.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(ApiError {
                        status,
                        code: "payload_too_large",
                        message: "request body is larger than the server accepts".into(),
                        pointer: None,
                        retry_after: None,
                    });
                }
                let message = match &rejection {
                    JsonRejection::JsonDataError(e) => format!("invalid request body: {}", source_text(e)),
                    JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", source_text(e)),
                    JsonRejection::MissingJsonContentType(_) => {
                        "expected a JSON body with Content-Type: application/json".to_string()
                    }
                    other => other.body_text(),
                };
                Err(ApiError::bad_request(message))
            }
        }
    }
}

/// `Path<T>` whose rejections are [`ApiError`]s: a path segment that does not parse (a
/// `JobId` that is not a UUID) → 400 in the JSON error shape, with the type's own message.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) if e.status() == StatusCode::BAD_REQUEST => {
                // A type's own parse error (`'x' is not a job id ...`) says it all.
                Err(ApiError::bad_request(match e.into_kind() {
                    ErrorKind::DeserializeError { message, .. } | ErrorKind::Message(message) => message,
                    other => other.to_string(),
                }))
            }
            Err(other) => Err(ApiError::internal(other.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s: `?limit=-1` or `?limit=abc` → 400 in the
/// JSON error shape of every other error, naming the parameter.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => {
                Err(ApiError::bad_request(format!("invalid query string: {}", source_text(&rejection))))
            }
        }
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    // The innermost source is serde_json's message with line/column.
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
