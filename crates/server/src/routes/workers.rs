//! `GET /api/v1/workers`: every worker's latest session with derived state.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use rota_api_types::workers::WorkerList;

/// Workers of the namespace (or all), live ones first, then by name.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", security(("admin" = [])),
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = WorkerList), (status = 401), (status = 403)))]
pub(crate) async fn list_workers(
    _: Admin,
    scope: crate::namespace::Scope,
    State(state): State<AppState>,
) -> Result<Json<WorkerList>, ApiError> {
    let mut workers = state.store.list_workers().await?;
    workers.retain(|w| scope.sees(&w.namespace));
    let ttl = state.config.lease_ttl;
    Ok(Json(WorkerList { workers: workers.iter().map(|w| views::worker_view(w, ttl)).collect() }))
}
