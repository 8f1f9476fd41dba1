//! `GET /api/v1/workers`: every worker's latest session with derived state; `forget` and
//! `unblock` (an operator cutting a worker's credential off).

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::metrics::LostBy;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use rota_api_types::workers::{ForgetReply, ForgetRequest, UnblockReply, WorkerList};
use rota_domain::limits;
use rota_store::bus::Event;

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

/// Ends worker `name`'s session everywhere: its credential is answered with a `forgotten`
/// 401 from now on (on which it kills its steps and exits), the attempts it held are lost
/// and retried elsewhere. With `block`, the name may not register again until unblocked;
/// without, it may register with the join token (a restarted worker comes back).
#[utoipa::path(post, path = "/api/v1/workers/{name}/forget", tag = "workers", security(("admin" = [])),
    params(("name" = String, Path, description = "the worker's name"), rota_api_types::namespace::NamespaceQuery),
    request_body = ForgetRequest,
    responses((status = 200, body = ForgetReply), (status = 400), (status = 401), (status = 403),
        (status = 404, description = "no worker of that name ever registered in the namespace (a block is stored anyway)")))]
pub(crate) async fn forget(
    _: Admin,
    scope: crate::namespace::Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ForgetRequest>,
) -> Result<Json<ForgetReply>, ApiError> {
    limits::check_text("name", &name, limits::MAX_NAME).map_err(ApiError::limit)?;
    let ns = scope.namespace.clone();
    let out = state.store.forget_worker(&ns, &name, req.block, state.store.now()).await?;
    if !out.known && !req.block {
        return Err(ApiError::not_found(format!(
            "no worker named \"{name}\" ever registered in namespace {ns}"
        )));
    }
    let mut events = Vec::new();
    for &session in &out.sessions {
        state.session_ended(session);
        events.push(Event::Worker {
            session,
            ended: true,
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
        });
    }
    if !out.lost.is_empty() {
        state.metrics.attempts_lost(LostBy::Forgotten, out.lost.len());
        events.push(Event::Claimable);
        events.extend(crate::routes::worker::lost_events(&out.lost, &ns, &name));
    }
    if !out.sessions.is_empty() {
        state.metrics.worker_gone(&ns, &name);
    }
    state.publish(events);
    tracing::warn!(worker = %name, namespace = %ns, sessions = out.sessions.len(), lost = out.lost.len(),
        block = req.block, "worker forgotten by an operator");
    Ok(Json(ForgetReply {
        namespace: ns,
        name,
        sessions: out.sessions,
        lost_attempts: u32::try_from(out.lost.len()).unwrap_or(u32::MAX),
        blocked: out.blocked,
    }))
}

/// Lets a name forgotten with `block` register again.
#[utoipa::path(post, path = "/api/v1/workers/{name}/unblock", tag = "workers", security(("admin" = [])),
    params(("name" = String, Path, description = "the worker's name"), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = UnblockReply), (status = 400), (status = 401), (status = 403),
        (status = 404, description = "no such route (an empty or dot-segment name)")))]
pub(crate) async fn unblock(
    _: Admin,
    scope: crate::namespace::Scope,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UnblockReply>, ApiError> {
    limits::check_text("name", &name, limits::MAX_NAME).map_err(ApiError::limit)?;
    let was_blocked = state.store.unblock_worker(&scope.namespace, &name).await?;
    tracing::info!(worker = %name, namespace = %scope.namespace, was_blocked, "worker name unblocked");
    Ok(Json(UnblockReply { name, was_blocked }))
}
