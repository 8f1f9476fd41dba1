//! Fleet control for operators: commands fanned out to live workers through their control
//! long-polls (replies collected until a timeout, silent workers named), durable revokes
//! (stored before anything is broadcast), and paused queues.

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::namespace::Scope;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use rota_api_types::fleet::{
    FleetCommand, FleetRequest, FleetResponse, KeyRevokeResult, KeyRevokeView, NoReply, QueueList, QueueView,
    RevokeList, RevokeRequest, RevokeResponse, RevokeResult, RevokeView, WorkerReply,
};
use rota_api_types::worker::{Command, StopOrder, StopReason};
use rota_domain::JobState;
use rota_domain::limits;
use rota_store::bus::Event;

/// Longest a revoke waits for the live workers to confirm they hold it.
const REVOKE_ACK_WAIT: Duration = Duration::from_secs(3);
use rota_store::{SessionStatus, WorkerRecord};
use std::time::{Duration, Instant};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends ping, inspect, stats or shutdown to every live worker of the namespace (or the
/// named ones) and collects the replies until the timeout; workers that did not answer are
/// listed.
#[utoipa::path(post, path = "/api/v1/workers/control", tag = "workers", security(("admin" = [])),
    request_body = FleetRequest, params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = FleetResponse), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn fleet_control(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<FleetRequest>,
) -> Result<Json<FleetResponse>, ApiError> {
    limits::check_count("workers", req.workers.len(), limits::MAX_ITEMS).map_err(ApiError::limit)?;
    for (i, w) in req.workers.iter().enumerate() {
        limits::check_text(&format!("workers[{i}]"), w, limits::MAX_NAME).map_err(ApiError::limit)?;
    }
    let timeout =
        req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT).min(state.config.max_poll);
    let command = match req.command {
        FleetCommand::Ping => Command::Ping,
        FleetCommand::Inspect => Command::Inspect,
        FleetCommand::Stats => Command::Stats,
        FleetCommand::Shutdown => Command::Shutdown {
            mode: req.mode.ok_or_else(|| ApiError::bad_request("mode: shutdown needs warm, soft or hard"))?,
        },
    };
    // One namespace at a time: `w1` of another namespace is another worker.
    let workers: Vec<WorkerRecord> =
        state.store.list_workers().await?.into_iter().filter(|w| w.namespace == scope.namespace).collect();
    let ttl = chrono::Duration::from_std(state.config.lease_ttl).unwrap_or(chrono::Duration::MAX);
    let now = state.store.now();
    let is_live = |w: &WorkerRecord| {
        w.status != SessionStatus::Offline && now.signed_duration_since(w.last_heartbeat_at) <= ttl
    };
    let mut targets = Vec::new();
    let mut no_reply = Vec::new();
    if req.workers.is_empty() {
        targets.extend(workers.iter().filter(|w| is_live(w)).cloned());
    } else {
        for name in &req.workers {
            match workers.iter().find(|w| &w.name == name) {
                Some(w) if is_live(w) => targets.push(w.clone()),
                Some(w) if w.status == SessionStatus::Offline => {
                    no_reply.push(NoReply { worker: name.clone(), why: "offline".into() })
                }
                Some(_) => no_reply.push(NoReply { worker: name.clone(), why: "stale".into() }),
                None => no_reply.push(NoReply { worker: name.clone(), why: "unknown".into() }),
            }
        }
    }
    let asks = targets.into_iter().map(|w| {
        let hub = state.hub.clone();
        let command = command.clone();
        async move {
            let start = Instant::now();
            let reply = hub.request(w.session, command, timeout).await;
            (w, start.elapsed(), reply)
        }
    });
    let mut replies = Vec::new();
    for (w, rtt, reply) in crate::hub::join_all(asks).await {
        match reply {
            Some(reply) => replies.push(WorkerReply {
                worker: w.name,
                host: w.host,
                session_id: w.session,
                rtt_ms: rtt.as_secs_f64() * 1000.0,
                reply,
            }),
            None => no_reply.push(NoReply { worker: w.name, why: "timeout".into() }),
        }
    }
    replies.sort_by(|a, b| a.worker.cmp(&b.worker));
    no_reply.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(Json(FleetResponse { replies, no_reply }))
}

/// Revokes jobs (by id) and idempotency keys: written to the store (serialized with claims,
/// durable) before anything is broadcast; with `terminate`, running steps get the signal,
/// then KILL after the grace. A job id the server never issued is 404 and nothing is stored.
#[utoipa::path(post, path = "/api/v1/revokes", tag = "workers", security(("admin" = [])), request_body = RevokeRequest,
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = RevokeResponse), (status = 400), (status = 401), (status = 403),
        (status = 404, description = "a job id the server never issued (or already pruned); nothing was revoked"),
        (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn revoke(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    if req.jobs.is_empty() && req.keys.is_empty() {
        return Err(ApiError::bad_request("jobs: name at least one job (or keys: one idempotency key)"));
    }
    limits::check_count("jobs", req.jobs.len(), limits::MAX_ITEMS).map_err(ApiError::limit)?;
    limits::check_count("keys", req.keys.len(), limits::MAX_ITEMS).map_err(ApiError::limit)?;
    for (i, k) in req.keys.iter().enumerate() {
        limits::check_text(&format!("keys[{i}]"), k, limits::MAX_IDEMPOTENCY_KEY).map_err(ApiError::limit)?;
    }
    if let Some(sig) = req.signal
        && !(1..=64).contains(&sig)
    {
        return Err(ApiError::bad_request(format!("signal: {sig} is not a signal number (1-64)")));
    }
    // Refuse the whole call before storing anything if an id was never issued: a revoke
    // of such an id could never match (ids are chosen by the server).
    // A job of another namespace is not found either: a revoke acts within its namespace
    // (the store checks it again inside the write).
    for (i, id) in req.jobs.iter().enumerate() {
        let found = match state.store.get_job(*id).await {
            Ok(job) => job.row.namespace == scope.namespace,
            Err(rota_store::StoreError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !found {
            return Err(ApiError::not_found(format!(
                "jobs[{i}]: no job {id} in namespace '{}': job ids are issued by the server at submit (or \
                 it was pruned, or is in another namespace: --namespace); to revoke a job not submitted yet, \
                 revoke its idempotency key (rota worker revoke --key K)",
                scope.namespace
            )));
        }
    }
    let now = state.store.now();
    // A time past what a timestamp holds is refused, not a panic.
    let expires_at = match req.expires_ms {
        None => None,
        Some(ms) => Some(
            i64::try_from(ms)
                .ok()
                .and_then(chrono::Duration::try_milliseconds)
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("expiresMs: {ms} ms from now is too far ahead"))
                })?,
        ),
    };
    let reqs = req
        .jobs
        .iter()
        .map(|id| rota_store::RevokeRequest {
            namespace: scope.namespace.clone(),
            job_id: *id,
            terminate: req.terminate,
            signal: req.signal,
            expires_at,
        })
        .collect();
    let outcomes = if req.jobs.is_empty() { Vec::new() } else { state.store.revoke_jobs(reqs, now).await? };
    let mut revoked_ids = Vec::new();
    let mut results = Vec::new();
    for out in outcomes {
        let out = out?;
        revoked_ids.push(out.job_id);
        results.push(revoke_result(&state, out, req.signal));
    }
    let key_reqs = req
        .keys
        .iter()
        .map(|k| rota_store::KeyRevokeRequest {
            namespace: scope.namespace.clone(),
            key: k.clone(),
            terminate: req.terminate,
            signal: req.signal,
            expires_at,
        })
        .collect();
    let key_outcomes =
        if req.keys.is_empty() { Vec::new() } else { state.store.revoke_keys(key_reqs, now).await? };
    let mut keys = Vec::new();
    for out in key_outcomes {
        let out = out?;
        let job = out.job.map(|j| {
            revoked_ids.push(j.job_id);
            revoke_result(&state, j, req.signal)
        });
        keys.push(KeyRevokeResult { key: out.key, job });
    }
    // Tell every live worker, so `inspect --revoked` shows what each holds (until expiry).
    // The answer waits (a little) until the workers heard from lately hold it; every worker
    // is sent it until it answers or a lease would have ended.
    if !revoked_ids.is_empty() {
        let expires_in_ms = req.expires_ms;
        let ttl = chrono::Duration::from_std(state.config.lease_ttl).unwrap_or(chrono::Duration::MAX);
        let (mut fresh, mut others) = (Vec::new(), Vec::new());
        // Only the namespace's workers can run its jobs.
        for w in state.store.list_workers().await? {
            if w.status == SessionStatus::Offline || w.namespace != scope.namespace {
                continue;
            }
            let push = (w.session, Command::Revoke { jobs: revoked_ids.clone(), expires_in_ms });
            if now.signed_duration_since(w.last_heartbeat_at) <= ttl {
                fresh.push(push)
            } else {
                others.push(push)
            }
        }
        state.hub.push_all(others, state.config.lease_ttl);
        let wanted = fresh.len();
        let acked = state.hub.send_all(fresh, state.config.lease_ttl, REVOKE_ACK_WAIT).await;
        if acked < wanted {
            tracing::info!(
                acked,
                wanted,
                "revoke: not every live worker confirmed it yet; it is still being sent"
            );
        }
    }
    state.publish(
        revoked_ids
            .iter()
            .map(|&job| Event::Job {
                job,
                state: Some(JobState::Revoked),
                namespace: Some(scope.namespace.clone()),
            })
            .collect(),
    );
    Ok(Json(RevokeResponse { results, keys }))
}

/// Pushes the stop orders of one revoke and says what it did.
fn revoke_result(state: &AppState, out: rota_store::RevokeOutcome, signal: Option<i32>) -> RevokeResult {
    let stops: Vec<_> = out
        .running
        .iter()
        .map(|r| {
            tracing::info!(job_id = %r.job_id, step = %r.step, attempt_id = %r.attempt_id, "revoke --terminate: stopping attempt");
            (r.session, Command::Stop(StopOrder { attempt_id: r.attempt_id, reason: StopReason::Revoked, signal }))
        })
        .collect();
    if !stops.is_empty() {
        state.hub.push_all(stops, state.config.lease_ttl);
    }
    RevokeResult {
        job_id: out.job_id,
        state: out.row.as_ref().map(|r| r.state.as_str().to_string()),
        changed: out.changed,
        terminated: out.running.len() as u32,
    }
}

/// Revokes in force (of jobs and of keys), newest first.
#[utoipa::path(get, path = "/api/v1/revokes", tag = "workers", security(("admin" = [])),
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = RevokeList)))]
pub(crate) async fn list_revokes(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
) -> Result<Json<RevokeList>, ApiError> {
    let now = state.store.now();
    let mut revokes = state.store.list_revokes(now).await?;
    if !scope.all {
        // Revokes of job ids name their namespace through the job (a pruned job's revoke
        // is shown in `default`'s listing only with --all-namespaces).
        let mut kept = Vec::with_capacity(revokes.len());
        for r in revokes {
            if let Ok(job) = state.store.get_job(r.job_id).await
                && job.row.namespace == scope.namespace
            {
                kept.push(r);
            }
        }
        revokes = kept;
    }
    let keys: Vec<_> =
        state.store.list_key_revokes(now).await?.into_iter().filter(|k| scope.sees(&k.namespace)).collect();
    Ok(Json(RevokeList {
        revokes: revokes
            .into_iter()
            .map(|r| RevokeView {
                job_id: r.job_id,
                terminate: r.terminate,
                signal: r.signal,
                expires_at: r.expires_at,
                created_at: r.created_at,
            })
            .collect(),
        keys: keys
            .into_iter()
            .map(|r| KeyRevokeView {
                namespace: r.namespace,
                key: r.key,
                terminate: r.terminate,
                signal: r.signal,
                expires_at: r.expires_at,
                created_at: r.created_at,
            })
            .collect(),
    }))
}

async fn queue_list(state: &AppState, namespace: Option<&str>) -> Result<Vec<QueueView>, ApiError> {
    Ok(state
        .store
        .queue_stats(namespace)
        .await?
        .into_iter()
        .map(|q| QueueView {
            namespace: q.namespace,
            queue: q.queue,
            ready: q.ready,
            running: q.running,
            paused: q.paused,
            oldest_waiting_since: q
                .oldest_ready
                .and_then(|id| id.submitted_ms())
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)),
        })
        .collect())
}

/// Queues with live steps or paused, with their depth.
#[utoipa::path(get, path = "/api/v1/queues", tag = "workers", security(("admin" = [])),
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = QueueList), (status = 401), (status = 403)))]
pub(crate) async fn list_queues(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(QueueList { queues: queue_list(&state, scope.filter()).await? }))
}

async fn set_paused(
    state: &AppState,
    scope: &Scope,
    queue: &str,
    paused: bool,
) -> Result<Json<QueueView>, ApiError> {
    limits::check_name("queue", queue).map_err(ApiError::limit)?;
    let ns = scope.namespace.as_str();
    state.store.set_queue_paused(ns, queue, paused, state.store.now()).await?;
    if !paused {
        state.wake_claimers();
    }
    let view =
        queue_list(state, Some(ns)).await?.into_iter().find(|q| q.queue == queue).unwrap_or(QueueView {
            namespace: ns.to_string(),
            queue: queue.to_string(),
            ready: 0,
            running: 0,
            paused,
            oldest_waiting_since: None,
        });
    Ok(Json(view))
}

/// Pauses a queue: no worker claims from it until it is resumed (persisted).
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", tag = "workers", security(("admin" = [])),
    params(("queue" = String, Path), rota_api_types::namespace::NamespaceQuery), responses((status = 200, body = QueueView), (status = 400), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn pause_queue(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueView>, ApiError> {
    set_paused(&state, &scope, &queue, true).await
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", tag = "workers", security(("admin" = [])),
    params(("queue" = String, Path), rota_api_types::namespace::NamespaceQuery), responses((status = 200, body = QueueView), (status = 400), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn resume_queue(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueView>, ApiError> {
    set_paused(&state, &scope, &queue, false).await
}
