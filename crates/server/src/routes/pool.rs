//! `POST /worker/pool`: which declared `WorkerPool` is in force for the calling worker, and
//! the queues its session claims from from now on. The server only resolves (the pools
//! are read from the store on each call, so every server of a control plane answers the
//! same); the worker applies the settings to itself.

use crate::auth::Session;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use rota_api_types::worker::{PoolQuery, PoolReply};
use rota_domain::limits;
use rota_domain::pool::{Declared, Member, PoolSpec, resolve};
use rota_domain::resource::Kind;

/// Most pools one resolution reads; a fleet declares a handful.
const MAX_POOLS: u32 = 1000;

/// The pool in force for this worker; the session's queues become the pool's (or the
/// worker's own when no pool sets queues).
#[utoipa::path(post, path = "/worker/pool", tag = "worker", security(("worker" = [])), request_body = PoolQuery,
    responses((status = 200, body = PoolReply), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn pool(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PoolQuery>,
) -> Result<Json<PoolReply>, ApiError> {
    limits::check_count("tags", req.tags.len(), limits::MAX_QUEUES).map_err(ApiError::limit)?;
    limits::check_count("queues", req.queues.len(), limits::MAX_QUEUES).map_err(ApiError::limit)?;
    for (i, q) in req.queues.iter().enumerate() {
        limits::check_name(&format!("queues[{i}]"), q).map_err(ApiError::limit)?;
    }
    let records = state.store.list_resources(Kind::WorkerPool, None, MAX_POOLS).await?;
    let specs: Vec<(usize, PoolSpec)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match serde_json::from_str::<PoolSpec>(&r.spec) {
            Ok(spec) => Some((i, spec)),
            Err(e) => {
                tracing::warn!(pool = %r.metadata.name, "a stored WorkerPool spec cannot be read: {e}");
                None
            }
        })
        .collect();
    let declared = specs.iter().map(|(i, spec)| Declared {
        name: &records[*i].metadata.name,
        generation: i64::try_from(records[*i].generation).unwrap_or(i64::MAX),
        created_at: records[*i].created_at,
        spec,
    });
    let in_force = resolve(declared, Member { name: &req.name, host: &req.host, tags: &req.tags });
    let queues = match in_force.as_ref().map(|p| &p.settings.queues).filter(|q| !q.is_empty()) {
        Some(q) => q.clone(),
        None => req.queues.clone(),
    };
    if !state.store.set_worker_queues(me.session, queues.clone()).await? {
        return Err(ApiError::unauthorized("this session is no longer live; register again"));
    }
    Ok(Json(PoolReply { in_force, queues }))
}
