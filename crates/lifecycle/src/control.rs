//! The worker's local control port (loopback only): `GET /healthz` (no secret: pid,
//! registration, shutdown requested) and `POST /shutdown {"mode": "warm|soft|hard"}`,
//! which needs the per-instance secret (`Authorization: Bearer`, constant-time compare).
//! Both the server half (in `rota worker run`) and the client half (`stop`) live here.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use rota_worker::{ShutdownHandle, ShutdownMode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// Where the secret file is named for a supervised worker.
pub const SECRET_FILE_ENV: &str = "ROTA_CONTROL_SECRET_FILE";

/// What the control port serves from.
#[derive(Clone)]
pub struct Served {
    /// The worker's shutdown handle.
    pub handle: ShutdownHandle,
    /// Set once the worker registered.
    pub registered: Arc<AtomicBool>,
    /// `None`: shutdown requests are refused (no supervisor gave a secret).
    pub secret: Option<String>,
    /// TEST ONLY: never answer shutdown requests (read only with the feature `test-hooks`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub hang: bool,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The worker's pid.
    pub pid: u32,
    /// Registered with the server.
    pub registered: bool,
    /// The shutdown requested so far.
    pub shutdown: Option<String>,
}

/// `POST /shutdown` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// warm, soft or hard.
    pub mode: String,
}

/// Binds `addr` and serves the control port until the process ends; returns the port.
pub async fn serve(addr: SocketAddr, served: Served) -> std::io::Result<u16> {
    let listener = TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/healthz", get(health))
        .route("/shutdown", post(shutdown))
        .with_state(Arc::new(served));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("control port stopped: {e}");
        }
    });
    Ok(port)
}

async fn health(State(s): State<Arc<Served>>) -> Json<Health> {
    Json(Health {
        pid: std::process::id(),
        registered: s.registered.load(Ordering::Relaxed),
        shutdown: s.handle.requested().map(|m| m.to_string()),
    })
}

async fn shutdown(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    Json(req): Json<ShutdownRequest>,
) -> (StatusCode, String) {
    let Some(secret) = &s.secret else {
        return (StatusCode::FORBIDDEN, "this worker takes no shutdown requests (not supervised)".into());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, "wrong control secret".into());
    }
    let mode = match req.mode.parse::<ShutdownMode>() {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
    };
    #[cfg(feature = "test-hooks")]
    if s.hang {
        tracing::warn!("TEST ONLY (--test-hang-control): not answering a {mode} shutdown request");
        std::future::pending::<()>().await;
    }
    tracing::info!(%mode, "shutdown requested on the control port");
    s.handle.request(mode);
    (StatusCode::ACCEPTED, mode.to_string())
}

/// Why a request to the control port failed.
#[derive(Debug)]
pub enum ControlError {
    /// No answer (refused, reset, or not within the timeout).
    Unreachable(String),
    /// An answer other than success.
    Rejected(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) => write!(f, "no answer: {m}"),
            Self::Rejected(m) => write!(f, "refused: {m}"),
        }
    }
}

/// Asks the worker at `addr` to shut down in `mode`; waits at most `timeout`.
pub async fn request_shutdown(
    addr: SocketAddr,
    secret: &str,
    mode: ShutdownMode,
    timeout: Duration,
) -> Result<(), ControlError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| ControlError::Unreachable(e.to_string()))?;
    let resp = client
        .post(format!("http://{addr}/shutdown"))
        .bearer_auth(secret)
        .json(&ShutdownRequest { mode: mode.to_string() })
        .send()
        .await
        .map_err(|e| ControlError::Unreachable(e.without_url().to_string()))?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(ControlError::Rejected(format!("{status}: {}", body.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_needs_the_secret_and_sets_the_mode() {
        let handle = ShutdownHandle::new();
        let served = Served {
            handle: handle.clone(),
            registered: Arc::new(AtomicBool::new(true)),
            secret: Some("s3cret".into()),
            hang: false,
        };
        let port = serve("127.0.0.1:0".parse().unwrap(), served).await.unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Duration::from_secs(5);
        let wrong = request_shutdown(addr, "nope", ShutdownMode::Hard, t).await;
        assert!(matches!(wrong, Err(ControlError::Rejected(m)) if m.contains("401")));
        assert_eq!(handle.requested(), None);
        request_shutdown(addr, "s3cret", ShutdownMode::Soft, t).await.unwrap();
        assert_eq!(handle.requested(), Some(ShutdownMode::Soft));
        let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            request_shutdown(closed, "s", ShutdownMode::Warm, t).await,
            Err(ControlError::Unreachable(_))
        ));
    }
}
