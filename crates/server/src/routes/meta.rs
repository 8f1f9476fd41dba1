//! Unauthenticated endpoints: `/healthz` (cheap: touches no store), `/metrics`,
//! `/openapi.json`.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;

/// `GET /healthz` body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
}

/// Liveness: answers without touching the store.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    // Per live worker: the concurrency in force (autoscaling moves it), from heartbeats.
    if let Ok(workers) = state.store.list_workers().await {
        text.push_str("# HELP rota_worker_active_concurrency Concurrency in force per live worker.\n");
        text.push_str("# TYPE rota_worker_active_concurrency gauge\n");
        for w in workers.iter().filter(|w| w.status != rota_store::SessionStatus::Offline) {
            let name = w.name.replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!(
                "rota_worker_active_concurrency{{worker=\"{name}\"}} {}\n",
                w.concurrency
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(crate::routes::openapi().clone())
}
