//! The worker protocol. Every attempt-scoped call is fenced by the store: a session that
//! does not hold the attempt (lost, superseded, someone else's) gets 409 and nothing
//! changes. Claims and control are long-polls that end early on a wake-up.

use crate::auth::{Joiner, Session, SessionInfo, hash_token, new_credential};
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::metrics::LostBy;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rota_api_types::worker::{
    ClaimRequest, ClaimResponse, ClaimedStep, CompleteBatchRequest, CompleteBatchResponse, CompleteRequest,
    CompleteResponse, ControlRequest, ControlResponse, HeartbeatRequest, HeartbeatResponse, ItemResult,
    LogChunk, LogsBatchRequest, LogsBatchResponse, LogsRequest, RegisterRequest, RegisterResponse,
    StartRequest, StopOrder, StopReason,
};
use rota_domain::AttemptStatus;
use rota_domain::{JobId, PROTOCOL_MINOR, PROTOCOL_VERSION, SessionId, limits};
use rota_store::bus::Event;
use rota_store::{
    ClaimedAttempt, Completion, CompletionRecorded, Heartbeat, LogAppend, NewLogChunk, StopCause,
};
use std::time::Duration;

/// Longest instance id accepted (a UUID is 36 characters).
const MAX_INSTANCE_ID: usize = limits::MAX_SHORT_TEXT;

/// Every string and list of a registration within its limit.
fn check_registration(req: &RegisterRequest) -> Result<(), limits::LimitError> {
    limits::check_text("name", &req.name, limits::MAX_NAME)?;
    limits::check_text("host", &req.host, limits::MAX_HOST)?;
    limits::check_text("version", &req.version, limits::MAX_SHORT_TEXT)?;
    if let Some(p) = &req.profile {
        limits::check_text("profile", p, limits::MAX_SHORT_TEXT)?;
    }
    if let Some(id) = &req.instance_id {
        limits::check_text("instanceId", id, MAX_INSTANCE_ID)?;
    }
    limits::check_count("queues", req.queues.len(), limits::MAX_QUEUES)?;
    for (i, q) in req.queues.iter().enumerate() {
        limits::check_name(&format!("queues[{i}]"), q)?;
    }
    limits::check_count("tags", req.tags.len(), limits::MAX_TAGS)?;
    for (i, t) in req.tags.iter().enumerate() {
        limits::check_text(&format!("tags[{i}]"), t, limits::MAX_NAME)?;
    }
    if req.concurrency as usize > limits::MAX_CONCURRENCY {
        return Err(limits::LimitError {
            field: "concurrency".into(),
            message: format!("{} is over the limit of {}", req.concurrency, limits::MAX_CONCURRENCY),
        });
    }
    limits::check_count("capabilities", req.capabilities.len(), limits::MAX_CAPABILITIES)?;
    for (i, c) in req.capabilities.iter().enumerate() {
        limits::check_text(&format!("capabilities[{i}]"), c, limits::MAX_SHORT_TEXT)?;
    }
    Ok(())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Joins the fleet: checks the protocol version and creates a session with its own
/// credential. A live session of the same name and instance (a restart) is superseded and
/// its attempts are lost; a live session of another instance keeps the name (409
/// `name_held`, naming it) unless the request asks to `replace` it.
#[utoipa::path(post, path = "/worker/register", tag = "worker", security(("join" = [])), request_body = RegisterRequest,
    responses((status = 200, body = RegisterResponse), (status = 400, description = "bad input or protocol mismatch"),
        (status = 401), (status = 403),
        (status = 409, description = "name_held: a live session of another instance holds the name"), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn register(
    _: Joiner,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    // Only the major version must match: a minor adds what peers of the same major may
    // ignore, so servers and workers can be upgraded one after the other.
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "protocol_mismatch",
            message: format!(
                "protocol version mismatch: the worker speaks version {}.{}, this server speaks version \
                 {PROTOCOL_VERSION}.{PROTOCOL_MINOR}; only the major version (the number before the dot) \
                 must match: upgrade the older of the two",
                req.protocol_version, req.protocol_minor
            ),
            pointer: None,
            retry_after: None,
        });
    }
    check_registration(&req).map_err(ApiError::limit)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_request("name: must not be blank"));
    }
    // `@` marks a namespace in default workspace paths (`workspace/@NS/NAME`).
    if req.name.starts_with('@') {
        return Err(ApiError::bad_request(format!("name: '{}' must not start with '@'", req.name)));
    }
    rota_domain::namespace::check("namespace", &req.namespace).map_err(ApiError::limit)?;
    if req.queues.is_empty() {
        return Err(ApiError::bad_request("queues: a worker needs at least one queue"));
    }
    if req.concurrency == 0 {
        return Err(ApiError::bad_request("concurrency: must be at least 1"));
    }
    if let Some(id) = &req.instance_id
        && id.trim().is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "instanceId: must be 1 to {MAX_INSTANCE_ID} printable characters"
        )));
    }
    let session = SessionId::new();
    let credential = new_credential();
    let reg = rota_store::WorkerRegistration {
        session,
        token_hash: hash_token(&credential),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        host: req.host.clone(),
        profile: req.profile,
        version: req.version,
        queues: req.queues,
        tags: req.tags,
        concurrency: req.concurrency,
        pid: req.pid,
        instance_id: req.instance_id.clone(),
        replace: req.replace,
        stale_after: state.config.lease_ttl,
    };
    let registered = match state.store.register_worker(reg, state.store.now()).await {
        Ok(r) => r,
        Err(rota_store::StoreError::NameHeld(holder)) => {
            tracing::warn!(worker = %req.name, host = %req.host, instance = ?req.instance_id,
                holder_host = %holder.host, holder_instance = ?holder.instance_id,
                "registration refused: the name is held by a live session of another instance");
            return Err(ApiError::name_held(&holder));
        }
        Err(e) => return Err(e.into()),
    };
    state.liveness.heard(session);
    if let Some(old) = registered.superseded {
        tracing::info!(worker = %req.name, old_session = %old, new_session = %session, lost = registered.lost.len(),
            replace = req.replace, "worker re-registered: old session superseded");
        // The old credential is refused from the next request on.
        state.session_ended(old);
    }
    state.metrics.worker_concurrency(&req.namespace, &req.name, req.concurrency);
    let (ns, name) = (Some(req.namespace.clone()), Some(req.name.clone()));
    let mut events = vec![
        Event::Claimable,
        Event::Worker { session, ended: false, namespace: ns.clone(), name: name.clone() },
    ];
    events.extend(registered.superseded.map(|old| Event::Worker {
        session: old,
        ended: true,
        namespace: ns.clone(),
        name: name.clone(),
    }));
    if !registered.lost.is_empty() {
        state.metrics.attempts_lost(LostBy::Superseded, registered.lost.len());
        events.extend(lost_events(&registered.lost, &req.namespace, &req.name));
    }
    state.publish(events);
    // A worker that starts later holds the revokes in force too, until each expires.
    let now = state.store.now();
    let in_force = state.store.list_revokes(now).await?;
    let revoke_expires_in_ms = in_force
        .iter()
        .filter_map(|r| {
            let left = r.expires_at?.signed_duration_since(now).num_milliseconds().max(0);
            Some((r.job_id, u64::try_from(left).unwrap_or(0)))
        })
        .collect();
    let revoked = in_force.into_iter().map(|r| r.job_id).collect();
    tracing::info!(worker = %req.name, session = %session, "worker registered");
    Ok(Json(RegisterResponse {
        session_id: session,
        credential,
        heartbeat_interval_ms: ms(state.config.heartbeat_interval),
        lease_ttl_ms: ms(state.config.lease_ttl),
        protocol_version: PROTOCOL_VERSION,
        protocol_minor: PROTOCOL_MINOR,
        superseded: registered.superseded,
        revoked,
        revoke_expires_in_ms,
    }))
}

/// Renews the leases of the attempts the worker holds and says which it must stop.
#[utoipa::path(post, path = "/worker/heartbeat", tag = "worker", security(("worker" = [])), request_body = HeartbeatRequest,
    responses((status = 200, body = HeartbeatResponse), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn heartbeat(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    limits::check_count("attempts", req.attempts.len(), limits::MAX_CONCURRENCY).map_err(ApiError::limit)?;
    state.liveness.heard(me.session);
    if let Some(c) = req.concurrency {
        state.metrics.worker_concurrency(&me.namespace, &me.name, c);
    }
    let hb = Heartbeat {
        session: me.session,
        attempts: req.attempts,
        draining: req.draining,
        concurrency: req.concurrency,
    };
    let out = state.store.heartbeat(hb, state.store.now(), state.config.lease_ttl).await?;
    let stop = out
        .stop
        .into_iter()
        .map(|(attempt_id, cause)| StopOrder { attempt_id, reason: stop_reason(cause), signal: None })
        .collect();
    Ok(Json(HeartbeatResponse { renewed: out.renewed, stop, lease_ttl_ms: ms(state.config.lease_ttl) }))
}

fn stop_reason(cause: StopCause) -> StopReason {
    match cause {
        StopCause::Cancelled => StopReason::Cancelled,
        StopCause::Revoked => StopReason::Revoked,
        StopCause::Deadline => StopReason::Deadline,
        StopCause::NotHeld => StopReason::NotHeld,
    }
}

/// Long-poll for commands (ping, stop, ...), carrying replies to earlier ones.
#[utoipa::path(post, path = "/worker/control", tag = "worker", security(("worker" = [])), request_body = ControlRequest,
    responses((status = 200, body = ControlResponse), (status = 401), (status = 403)))]
pub(crate) async fn control(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ControlRequest>,
) -> Result<Json<ControlResponse>, ApiError> {
    limits::check_count("replies", req.replies.len(), limits::MAX_CONCURRENCY).map_err(ApiError::limit)?;
    state.hub.deliver(req.replies);
    let wait = Duration::from_millis(req.wait_ms).min(state.config.max_poll);
    let commands = state.hub.take(me.session, wait, &state.shutdown).await;
    Ok(Json(ControlResponse { commands }))
}

/// Claims up to `max` ready steps; waits up to `waitMs` when none is ready.
#[utoipa::path(post, path = "/worker/jobs/claim", tag = "worker", security(("worker" = [])), request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn claim(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let max = req.max.min(1024);
    if max == 0 {
        return Ok(Json(ClaimResponse::default()));
    }
    let wait = Duration::from_millis(req.wait_ms).min(state.config.max_poll);
    let arrived = tokio::time::Instant::now();
    let deadline = arrived + wait;
    loop {
        // A session not heard from lately (no heartbeat for 1.5 intervals and this claim
        // no younger) takes nothing more: a cut link sends no FIN, so this request may
        // look open long after its worker became unreachable, and what it took would be
        // lost again. The steps stay ready for live workers; a live worker whose
        // heartbeats are merely late just claims again (a new claim counts as heard from).
        if !state.liveness.fresh(me.session, arrived, tokio::time::Instant::now()) {
            return Ok(hand_out(&state, &me, Vec::new()).await);
        }
        // Register interest before looking, so a submit between the look and the wait
        // still wakes us.
        let notified = state.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let asked = std::time::Instant::now();
        let got = state.store.claim(me.session, max, state.store.now(), state.config.lease_ttl).await?;
        state.metrics.claim_took(asked.elapsed());
        let now = tokio::time::Instant::now();
        if !got.is_empty() || now >= deadline || state.shutdown.is_cancelled() {
            return Ok(hand_out(&state, &me, got).await);
        }
        // Park: the next submit claims for us in its own commit (parking.rs). Retries with a
        // backoff become claimable without a submit: look again at least once a second.
        let nap = (deadline - now).min(Duration::from_secs(1));
        let (ticket, mut handed) = state.parking.park(me.session, max, arrived);
        let woken = tokio::select! {
            r = &mut handed => Some(r.unwrap_or_default()),
            _ = &mut notified => None,
            _ = tokio::time::sleep(nap) => None,
            _ = state.shutdown.cancelled() => None,
        };
        let got = match woken {
            Some(got) => got,
            // Nobody took us: look again.
            None if ticket.leave() => continue,
            // A submit took us: our steps (maybe none) are on the way.
            None => handed.await.unwrap_or_default(),
        };
        if !got.is_empty() {
            return Ok(hand_out(&state, &me, got).await);
        }
    }
}

/// The one point where claimed attempts become what their worker is sent, whether its own
/// claim took them or a submit claimed them for its parked long-poll (`handoff.rs`): secret
/// references are resolved here, for this attempt only. An attempt whose secret cannot be
/// resolved (deleted, a key gone, another key) is not sent: it fails at once, naming the
/// reference and the problem, as its worker would have reported it.
async fn hand_out(state: &AppState, me: &SessionInfo, got: Vec<ClaimedAttempt>) -> Json<ClaimResponse> {
    let session = me.session;
    state.metrics.attempts_claimed(&got);
    if !got.is_empty() {
        state.publish(
            got.iter()
                .map(|a| Event::Attempt {
                    job: a.job_id,
                    step: a.step.clone(),
                    attempt: a.attempt_id,
                    status: AttemptStatus::Running,
                    namespace: Some(a.namespace.clone()),
                    worker: Some(me.name.clone()),
                })
                .collect(),
        );
    }
    let mut attempts = Vec::with_capacity(got.len());
    let mut failed = Vec::new();
    for a in got {
        // A job's references name secrets of its own namespace.
        let namespace = a.namespace.clone();
        match resolve_secrets(state, &namespace, &a).await {
            Ok(values) => attempts.push(to_claimed(a, values)),
            Err(u) => {
                let why =
                    rota_domain::Reason::SecretUnavailable { reference: u.reference, problem: u.problem };
                tracing::warn!(job_id = %a.job_id, step = %a.step, attempt_id = %a.attempt_id,
                    "attempt not handed out: {why}");
                failed.push(Completion {
                    session,
                    job_id: a.job_id,
                    step: a.step,
                    attempt_id: a.attempt_id,
                    outcome: rota_domain::AttemptOutcome::Failed {
                        exit_code: None,
                        signal: None,
                        why: Some(why.to_string()),
                    },
                    run_ms: Some(0),
                    jitter01: rand::random::<f64>(),
                    outputs: Default::default(),
                });
            }
        }
    }
    if !failed.is_empty() {
        // Not sent, so only here can they end; if this fails, their leases expire.
        match state.store.complete(failed, state.store.now()).await {
            Ok(_) => state.wake_claimers(),
            Err(e) => tracing::warn!("attempts whose secrets could not be resolved were not recorded: {e}"),
        }
    }
    Json(ClaimResponse { attempts })
}

/// The values of an attempt's secret references, by variable, resolved in `namespace`.
async fn resolve_secrets(
    state: &AppState,
    namespace: &str,
    a: &ClaimedAttempt,
) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, crate::secrets::Unresolved> {
    if a.secret_env.is_empty() {
        return Ok(Vec::new());
    }
    let values = crate::secrets::resolve(
        state.store.as_ref(),
        state.config.secret_key.as_deref(),
        namespace,
        a.secret_env.values(),
    )
    .await?;
    Ok(a.secret_env.iter().filter_map(|(var, r)| Some((var.clone(), values.get(r)?.clone()))).collect())
}

fn to_claimed(a: ClaimedAttempt, secrets: Vec<(String, zeroize::Zeroizing<String>)>) -> ClaimedStep {
    let mut env = a.env;
    let secret_env: Vec<String> = secrets.iter().map(|(k, _)| k.clone()).collect();
    // The wire body needs plain strings; the copies end with the response.
    env.extend(secrets.into_iter().map(|(k, v)| (k, v.to_string())));
    ClaimedStep {
        attempt_id: a.attempt_id,
        job_id: a.job_id,
        step: a.step,
        attempt: a.number,
        run: a.run,
        env,
        secret_env,
        timeout_ms: a.timeout.map(ms),
        memory_limit: a.memory_limit,
        keep_workspace: a.keep_workspace,
        log_cap: a.log_cap,
        queue: Some(a.queue),
    }
}

/// Records the pid of a step's shell (optional; claims already mark attempts running).
#[utoipa::path(post, path = "/worker/jobs/{id}/steps/{step}/start", tag = "worker", security(("worker" = [])),
    params(("id" = String, Path), ("step" = String, Path)), request_body = StartRequest,
    responses((status = 204), (status = 401), (status = 403), (status = 404, description = "no such attempt"), (status = 409), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn start_step(
    Session(me): Session,
    State(state): State<AppState>,
    ApiPath((_id, _step)): ApiPath<(JobId, String)>,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<StatusCode, ApiError> {
    state.store.record_start(me.session, req.attempt_id, req.pid).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn to_new_chunks(chunks: Vec<LogChunk>) -> (Vec<NewLogChunk>, u64) {
    let mut bytes = 0u64;
    let out = chunks
        .into_iter()
        .map(|c| {
            bytes += c.data.0.len() as u64;
            NewLogChunk { stream: c.stream, seq: c.seq, data: c.data.0 }
        })
        .collect();
    (out, bytes)
}

fn to_response(r: CompletionRecorded) -> CompleteResponse {
    CompleteResponse { attempt_id: r.attempt_id, status: r.status, outcome: r.outcome, repeated: r.repeated }
}

/// Records the results (final log chunks first); with `claim` > 0, then claims up to that
/// many attempts for the session in the same store call (the slots the results free,
/// which the worker fills again at once). Returns the per-item results and what was
/// claimed (not handed out yet: see [`hand_out`]).
async fn complete_items(
    state: &AppState,
    me: &SessionInfo,
    items: Vec<(JobId, String, rota_api_types::worker::CompleteItem)>,
    claim: u32,
) -> Result<(Vec<Result<CompletionRecorded, ApiError>>, Vec<ClaimedAttempt>), ApiError> {
    let mut items = items;
    for (_, _, item) in &mut items {
        // Outputs the steps that need them cannot be given make the step fail, saying why,
        // rather than refusing the request: a refused completion would be sent again forever
        // (a batch) or dropped (one item), and the step re-run though it ran.
        if let Err(e) = rota_domain::workflow::check_outputs(&item.outputs) {
            item.outputs.clear();
            if item.outcome == rota_domain::AttemptOutcome::Succeeded {
                item.outcome = rota_domain::AttemptOutcome::Failed {
                    exit_code: Some(0),
                    signal: None,
                    why: Some(e.to_string()),
                };
            }
        }
    }
    // Final log chunks first, so a finished job's log is complete the moment it ends.
    let mut appends = Vec::new();
    for (job_id, step, item) in &items {
        if !item.logs.is_empty() || item.dropped_bytes > 0 {
            let (chunks, bytes) = to_new_chunks(item.logs.clone());
            state.metrics.log_bytes(bytes);
            appends.push(LogAppend {
                session: me.session,
                job_id: *job_id,
                step: step.clone(),
                attempt_id: item.attempt_id,
                chunks,
                dropped: item.dropped_bytes,
            });
        }
    }
    let had_logs = !appends.is_empty();
    if had_logs {
        // A refused append (not held) is answered by the completion's own 409 below.
        let _ = state.store.append_logs(appends).await?;
    }
    let keys: Vec<(JobId, String)> = items.iter().map(|(job, step, _)| (*job, step.clone())).collect();
    let run_ms: Vec<Option<u64>> = items.iter().map(|(_, _, i)| i.run_ms).collect();
    let completions = items
        .into_iter()
        .map(|(job_id, step, item)| Completion {
            session: me.session,
            job_id,
            step,
            attempt_id: item.attempt_id,
            outcome: item.outcome,
            run_ms: item.run_ms,
            jitter01: rand::random::<f64>(),
            outputs: item.outputs,
        })
        .collect();
    let (results, claimed) = if claim == 0 {
        (state.store.complete(completions, state.store.now()).await?, Vec::new())
    } else {
        let claimer = rota_store::Claimer { session: me.session, max: claim };
        let asked = std::time::Instant::now();
        let out = state
            .store
            .complete_and_claim(completions, claimer, state.store.now(), state.config.lease_ttl)
            .await?;
        state.metrics.claim_took(asked.elapsed());
        // A failed claim (the session is gone) leaves the results recorded: nothing is handed out.
        let claimed = out.claimed.unwrap_or_else(|e| {
            tracing::debug!(session = %me.session, "claim with the completion took nothing: {e}");
            Vec::new()
        });
        state.metrics.claimed_at_completion(claimed.len() as u64);
        (out.completed, claimed)
    };
    // Output first: a finished job's log is complete when its end is heard of.
    let mut events = if had_logs { log_events(&keys, &me.namespace) } else { Vec::new() };
    let mut finished = Vec::new();
    let mut recorded = false;
    let out = results
        .into_iter()
        .zip(keys.iter().zip(&run_ms))
        .map(|(r, ((job, step), run_ms))| {
            r.inspect(|rec| {
                if !rec.repeated {
                    recorded = true;
                    if rec.job_finished {
                        finished.push((*job, rec.job_state));
                    }
                    // An attempt its worker reports lost (self-fencing, shutdown, a spawn
                    // failure) counts as lost, as the sweeper's would.
                    state.metrics.attempt_ended(&me.namespace, &rec.outcome, *run_ms);
                    events.push(Event::Attempt {
                        job: *job,
                        step: step.clone(),
                        attempt: rec.attempt_id,
                        status: rec.status,
                        namespace: Some(me.namespace.clone()),
                        worker: Some(me.name.clone()),
                    });
                }
            })
            .map_err(ApiError::from)
        })
        .collect();
    // The store says in which state each ended job ended: no read back per job.
    for (job, job_state) in finished {
        events.push(Event::Job { job, state: job_state, namespace: Some(me.namespace.clone()) });
    }
    if recorded {
        // Completions ready dependents and retries, and free the worker's slot.
        events.push(Event::Claimable);
    }
    state.publish(events);
    Ok((out, claimed))
}

/// Records how an attempt ended (with its final log chunks). A repeat of a recorded
/// completion returns the recorded result; an attempt the caller does not hold → 409.
#[utoipa::path(post, path = "/worker/jobs/{id}/steps/{step}/complete", tag = "worker", security(("worker" = [])),
    params(("id" = String, Path), ("step" = String, Path)), request_body = CompleteRequest,
    responses((status = 200, body = CompleteResponse), (status = 401), (status = 403), (status = 404), (status = 409), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn complete_step(
    Session(me): Session,
    State(state): State<AppState>,
    ApiPath((job_id, step)): ApiPath<(JobId, String)>,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> Result<Json<CompleteResponse>, ApiError> {
    let item = rota_api_types::worker::CompleteItem {
        job_id,
        step: step.clone(),
        attempt_id: req.attempt_id,
        outcome: req.outcome,
        logs: req.logs,
        dropped_bytes: req.dropped_bytes,
        run_ms: req.run_ms,
        outputs: req.outputs,
    };
    let (mut results, _) = complete_items(&state, &me, vec![(job_id, step, item)], 0).await?;
    let r = results.pop().ok_or_else(|| ApiError::internal("store returned no result"))??;
    Ok(Json(to_response(r)))
}

/// Several completions in one call; one entry per item with its own status. With `claim`,
/// the server then claims for the slots they free (at most one per result, never waiting)
/// and returns what it took in `claimed`.
#[utoipa::path(post, path = "/worker/jobs/complete", tag = "worker", security(("worker" = [])),
    request_body = CompleteBatchRequest,
    responses((status = 200, body = CompleteBatchResponse), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn complete_batch(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompleteBatchRequest>,
) -> Result<Json<CompleteBatchResponse>, ApiError> {
    limits::check_count("results", req.results.len(), limits::MAX_CONCURRENCY).map_err(ApiError::limit)?;
    // A claim only for slots these results free: one per result at most.
    let claim = req.claim.min(u32::try_from(req.results.len()).unwrap_or(u32::MAX));
    let items = req.results.into_iter().map(|i| (i.job_id, i.step.clone(), i)).collect();
    let (results, claimed) = complete_items(&state, &me, items, claim).await?;
    let claimed = if claim == 0 { Vec::new() } else { hand_out(&state, &me, claimed).await.0.attempts };
    Ok(Json(CompleteBatchResponse {
        claimed,
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(rec) => ItemResult { status: 200, result: Some(to_response(rec)), error: None },
                Err(e) => ItemResult { status: e.status.as_u16(), result: None, error: Some(e.message) },
            })
            .collect(),
    }))
}

async fn append(
    state: &AppState,
    me: &SessionInfo,
    items: Vec<LogAppend>,
) -> Result<Vec<Result<(), ApiError>>, ApiError> {
    let mut jobs: Vec<JobId> = items.iter().map(|i| i.job_id).collect();
    jobs.dedup();
    let results = state.store.append_logs(items).await?;
    state.publish(
        jobs.into_iter().map(|job| Event::Logs { job, namespace: Some(me.namespace.clone()) }).collect(),
    );
    Ok(results.into_iter().map(|r| r.map_err(ApiError::from)).collect())
}

/// Appends output chunks of an attempt the caller holds (409 otherwise).
#[utoipa::path(post, path = "/worker/jobs/{id}/logs", tag = "worker", security(("worker" = [])),
    params(("id" = String, Path)), request_body = LogsRequest,
    responses((status = 204), (status = 401), (status = 403), (status = 409), (status = 413), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn append_logs(
    Session(me): Session,
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<JobId>,
    ApiJson(req): ApiJson<LogsRequest>,
) -> Result<StatusCode, ApiError> {
    let (chunks, bytes) = to_new_chunks(req.chunks);
    state.metrics.log_bytes(bytes);
    let item = LogAppend {
        session: me.session,
        job_id,
        step: req.step,
        attempt_id: req.attempt_id,
        chunks,
        dropped: req.dropped_bytes,
    };
    let mut results = append(&state, &me, vec![item]).await?;
    results.pop().ok_or_else(|| ApiError::internal("store returned no result"))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Output chunks of several attempts, coalesced by the worker.
#[utoipa::path(post, path = "/worker/logs", tag = "worker", security(("worker" = [])), request_body = LogsBatchRequest,
    responses((status = 200, body = LogsBatchResponse), (status = 401), (status = 403), (status = 413), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn append_logs_batch(
    Session(me): Session,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LogsBatchRequest>,
) -> Result<Json<LogsBatchResponse>, ApiError> {
    limits::check_count("batches", req.batches.len(), limits::MAX_CONCURRENCY).map_err(ApiError::limit)?;
    store_log_batches(&state, &me, req).await.map(Json)
}

/// Stores a log batch request (either form: JSON or frames), one result per batch.
pub(super) async fn store_log_batches(
    state: &AppState,
    me: &SessionInfo,
    req: LogsBatchRequest,
) -> Result<LogsBatchResponse, ApiError> {
    let items = req
        .batches
        .into_iter()
        .map(|b| {
            let (chunks, bytes) = to_new_chunks(b.chunks);
            state.metrics.log_bytes(bytes);
            LogAppend {
                session: me.session,
                job_id: b.job_id,
                step: b.step,
                attempt_id: b.attempt_id,
                chunks,
                dropped: b.dropped_bytes,
            }
        })
        .collect();
    let results = append(state, me, items).await?;
    Ok(LogsBatchResponse {
        results: results
            .into_iter()
            .map(|r| match r {
                Ok(()) => ItemResult { status: 204, result: None, error: None },
                Err(e) => ItemResult { status: e.status.as_u16(), result: None, error: Some(e.message) },
            })
            .collect(),
    })
}

/// Leaves the fleet cleanly; attempts still held are lost (and follow `on_lost`).
#[utoipa::path(post, path = "/worker/unregister", tag = "worker", security(("worker" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn unregister(
    Session(me): Session,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    let lost = state.store.unregister_worker(me.session, state.store.now()).await?;
    state.session_ended(me.session);
    let mut events = vec![Event::Worker {
        session: me.session,
        ended: true,
        namespace: Some(me.namespace.clone()),
        name: Some(me.name.clone()),
    }];
    if !lost.is_empty() {
        state.metrics.attempts_lost(LostBy::Unregistered, lost.len());
        events.push(Event::Claimable);
        events.extend(lost_events(&lost, &me.namespace, &me.name));
    }
    state.metrics.worker_gone(&me.namespace, &me.name);
    state.publish(events);
    tracing::info!(worker = %me.name, session = %me.session, "worker unregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// What a lost attempt of the worker `name` (in `namespace`: a worker holds only its own
/// namespace's attempts) tells the bus.
pub(crate) fn lost_events<'a>(
    lost: &'a [rota_store::LostAttempt],
    namespace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Event> + 'a {
    lost.iter().map(move |l| Event::Attempt {
        job: l.job_id,
        step: l.step.clone(),
        attempt: l.attempt_id,
        status: AttemptStatus::Lost,
        namespace: Some(namespace.to_string()),
        worker: Some(name.to_string()),
    })
}

/// Output stored for these jobs (a batch of repeated completions still carried logs).
fn log_events(keys: &[(JobId, String)], namespace: &str) -> Vec<Event> {
    let mut jobs: Vec<JobId> = keys.iter().map(|(job, _)| *job).collect();
    jobs.dedup();
    jobs.into_iter().map(|job| Event::Logs { job, namespace: Some(namespace.to_string()) }).collect()
}
