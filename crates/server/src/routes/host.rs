//! What the server tells a worker about its host: the declared `WorkerPool` in force
//! (`POST /worker/pool`, which also makes the session claim from the pool's queues) and
//! the `WorkerConfig`s that apply (`POST /worker/configs`, which records what became of
//! the last ones applied as each config's `Degraded` condition). The server only resolves
//! (declared resources are read from the store on each call, so every server of a control
//! plane answers the same); the worker applies them to itself.

use crate::auth::Session;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use rota_api_types::worker::{ConfigQuery, ConfigReply, ConfigResult, PoolQuery, PoolReply};
use rota_domain::hostconfig::{DeclaredConfig, WorkerConfigSpec, matching};
use rota_domain::limits;
use rota_domain::pool::{Declared, Member, PoolSpec, resolve};
use rota_domain::resource::{ConditionStatus, Kind};
use rota_store::resources::{ResourceKey, ResourceRecord};
use serde::de::DeserializeOwned;

/// Most resources of one kind one resolution reads; a fleet declares a handful.
const MAX_DECLARED: u32 = 1000;

/// Most outcomes one query reports.
const MAX_RESULTS: usize = 100;

/// Every declared resource of `kind` with its spec; a spec that cannot be read is logged
/// and left out (it was valid when applied; a later release may have changed it).
async fn declared<T: DeserializeOwned>(
    state: &AppState,
    namespace: &str,
    kind: Kind,
) -> Result<Vec<(ResourceRecord, T)>, ApiError> {
    let records = state.store.list_resources(kind, Some(namespace), None, MAX_DECLARED).await?;
    Ok(records
        .into_iter()
        .filter_map(|r| match serde_json::from_str::<T>(&r.spec) {
            Ok(spec) => Some((r, spec)),
            Err(e) => {
                tracing::warn!(name = %r.metadata.name, "a stored {kind} spec cannot be read: {e}");
                None
            }
        })
        .collect())
}

fn generation(r: &ResourceRecord) -> i64 {
    i64::try_from(r.generation).unwrap_or(i64::MAX)
}

fn check_member(name: &str, host: &str, tags: &[String]) -> Result<(), ApiError> {
    // As registration checks them: worker names are free text (`profile@host`).
    limits::check_text("name", name, limits::MAX_NAME).map_err(ApiError::limit)?;
    limits::check_text("host", host, limits::MAX_NAME).map_err(ApiError::limit)?;
    limits::check_count("tags", tags.len(), limits::MAX_QUEUES).map_err(ApiError::limit)
}

/// The pool in force for this worker; the session's queues become the pool's (or the
/// worker's own when no pool sets queues).
#[utoipa::path(post, path = "/worker/pool", tag = "worker", security(("worker" = [])), request_body = PoolQuery,
    responses((status = 200, body = PoolReply), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn pool(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PoolQuery>,
) -> Result<Json<PoolReply>, ApiError> {
    check_member(&req.name, &req.host, &req.tags)?;
    limits::check_count("queues", req.queues.len(), limits::MAX_QUEUES).map_err(ApiError::limit)?;
    for (i, q) in req.queues.iter().enumerate() {
        limits::check_name(&format!("queues[{i}]"), q).map_err(ApiError::limit)?;
    }
    // A worker is governed by its own namespace's pools and configs only.
    let pools = declared::<PoolSpec>(&state, &me.namespace, Kind::WorkerPool).await?;
    let in_force = resolve(
        pools.iter().map(|(r, spec)| Declared {
            name: &r.metadata.name,
            generation: generation(r),
            created_at: r.created_at,
            spec,
        }),
        Member { name: &req.name, host: &req.host, tags: &req.tags },
    );
    let queues = match in_force.as_ref().map(|p| &p.settings.queues).filter(|q| !q.is_empty()) {
        Some(q) => q.clone(),
        None => req.queues.clone(),
    };
    if !state.store.set_worker_queues(me.session, queues.clone()).await? {
        return Err(ApiError::unauthorized("this session is no longer live; register again"));
    }
    Ok(Json(PoolReply { in_force, queues }))
}

/// The configs that apply to this worker, after recording what became of the ones it
/// applied last.
#[utoipa::path(post, path = "/worker/configs", tag = "worker", security(("worker" = [])), request_body = ConfigQuery,
    responses((status = 200, body = ConfigReply), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn configs(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ConfigQuery>,
) -> Result<Json<ConfigReply>, ApiError> {
    check_member(&req.name, &req.host, &req.tags)?;
    limits::check_count("results", req.results.len(), MAX_RESULTS).map_err(ApiError::limit)?;
    for r in &req.results {
        record(&state, &me.namespace, &req.name, r).await?;
    }
    let all = declared::<WorkerConfigSpec>(&state, &me.namespace, Kind::WorkerConfig).await?;
    let configs = matching(
        all.iter().map(|(r, spec)| DeclaredConfig {
            name: &r.metadata.name,
            generation: generation(r),
            spec,
        }),
        Member { name: &req.name, host: &req.host, tags: &req.tags },
    );
    let mut resolved = Vec::with_capacity(configs.len());
    for c in configs {
        resolved.push(resolve_config(&state, &me.namespace, c).await);
    }
    Ok(Json(ConfigReply { configs: resolved }))
}

/// Fills a matched config's secret references in for the worker asking (values go to this
/// reply only; the stored config keeps the references), and names what a secret filled so
/// the worker masks it. A reference that cannot be resolved leaves its variable unset and
/// its file out, with a warning naming it (never a value).
async fn resolve_config(
    state: &AppState,
    namespace: &str,
    mut c: rota_domain::hostconfig::Matched,
) -> rota_domain::hostconfig::Matched {
    use rota_domain::secret::{EnvValue, SecretRef};
    let refs = c.spec.secret_refs();
    if refs.is_empty() {
        return c;
    }
    // The worker's own namespace: its configs and their secrets are of it.
    let keyring = state.config.secret_key.as_deref();
    let mut values = std::collections::BTreeMap::new();
    for (field, r) in refs {
        match crate::secrets::resolve(state.store.as_ref(), keyring, namespace, [&r]).await {
            Ok(mut v) => {
                if let Some(value) = v.remove(&r) {
                    values.insert(r, value);
                }
            }
            Err(u) => tracing::warn!(config = %c.name, field = %field, reference = %u.reference,
                "worker config secret not resolved: {}", u.problem),
        }
    }
    let env = std::mem::take(&mut c.spec.env);
    for (k, v) in env {
        match v {
            EnvValue::Secret(r) => {
                if let Some(value) = values.get(&r) {
                    c.secret_env.push(k.clone());
                    c.spec.env.insert(k, EnvValue::Plain(value.to_string()));
                }
            }
            plain => {
                c.spec.env.insert(k, plain);
            }
        }
    }
    let files = std::mem::take(&mut c.spec.files);
    for mut f in files {
        match f.secret.take() {
            Some(r) => {
                if let Some(value) = values.get(&SecretRef { secret: r }) {
                    f.content = value.to_string();
                    c.secret_files.push(f.path.clone());
                    c.spec.files.push(f);
                }
            }
            None => c.spec.files.push(f),
        }
    }
    c
}

/// Records `Degraded` on the config: true with the worker, exit code and output tail when
/// its apply failed, false when it worked. Ignored when the config moved on meanwhile.
async fn record(state: &AppState, namespace: &str, worker: &str, r: &ConfigResult) -> Result<(), ApiError> {
    limits::check_name("results.name", &r.name).map_err(ApiError::limit)?;
    let key = ResourceKey::new(namespace, Kind::WorkerConfig, r.name.clone());
    let Some(found) = state.store.get_resource(&key).await? else { return Ok(()) };
    let Ok(applied) = u64::try_from(r.generation) else { return Ok(()) };
    if found.generation != applied {
        return Ok(());
    }
    let tail: String = r.message.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
    let mut status = found.status.clone();
    let (st, reason, message) = if r.ok {
        (ConditionStatus::False, "Applied", format!("worker {worker} applied generation {applied}"))
    } else {
        let code = r.exit_code.map_or_else(|| "did not finish".to_string(), |c| format!("exited {c}"));
        (ConditionStatus::True, "SetupFailed", format!("worker {worker}: setup {code}: {tail}"))
    };
    if status.observe(applied, "Degraded", st, reason, &message, state.store.now()) {
        state.store.set_resource_status(&key, applied, &status, state.store.now()).await?;
        state.publish(vec![crate::events::status_changed(&key)]);
    }
    Ok(())
}
