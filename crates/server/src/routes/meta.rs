//! `/healthz` (cheap: touches no store), `/metrics`, `/openapi.json`, unauthenticated;
//! `/healthz/detail` (admin): this server and the leader.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use rota_api_types::health::{HealthDetail, ServerIdentity};
use rota_api_types::jobs::LogQuotaUse;
use rota_store::leader::ServerInfo;
use serde::Serialize;

/// `GET /healthz` body.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
    /// Use of the total log quota (`rota server status` shows it).
    logs: LogQuotaUse,
    /// When the served TLS certificate expires (absent without TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_not_after: Option<chrono::DateTime<chrono::Utc>>,
}

fn log_quota_use(state: &AppState) -> LogQuotaUse {
    let u = state.store.log_usage();
    LogQuotaUse {
        live_bytes: u.live_bytes,
        quota_bytes: u.quota_bytes,
        pruned_bytes: u.pruned_bytes,
        refused_bytes: u.refused_bytes,
    }
}

/// Liveness: answers without touching the store (the log quota's use is kept in memory).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        logs: log_quota_use(&state),
        tls_not_after: state.config.tls.as_ref().map(|t| t.not_after()),
    })
}

fn identity(s: &ServerInfo) -> ServerIdentity {
    ServerIdentity { id: s.id.0, host: s.host.clone(), pid: s.pid, started_at: s.started_at }
}

/// This server, and which server leads (runs lease expiry, deadlines and retention).
#[utoipa::path(get, path = "/healthz/detail", tag = "meta", security(("admin" = [])),
    responses((status = 200, body = HealthDetail), (status = 401), (status = 403), (status = 503, description = "the backend cannot say who leads")))]
pub(crate) async fn healthz_detail(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<HealthDetail>, ApiError> {
    let leader = state.leader.leader().await?;
    Ok(Json(HealthDetail {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        server: identity(&state.me),
        leads: leader.as_ref().is_some_and(|l| l.id == state.me.id),
        leader: leader.as_ref().map(identity),
        logs: log_quota_use(&state),
    }))
}

/// Prometheus metrics (every series is listed in the README). Reads memory only: this
/// server's recorder, and on the leader its cached fleet snapshot.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let process = state.config.process_probe.and_then(|probe| probe());
    let mut text = state.metrics.render(&state.store.log_usage(), process);
    text.push_str(&state.fleet_gauges.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(crate::routes::openapi().clone())
}
