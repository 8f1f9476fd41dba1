//! The supervisor link and the fleet heal. A background worker's supervisor reports its
//! local state (`POST /supervisor/link`, join token) and long-polls there for a heal; the
//! server keeps the latest report per host and key (`crate::supervisors`), lists them
//! (`GET /api/v1/supervisors`) and heals through them (`POST /api/v1/workers/heal`):
//! detection reads only that cache; the one heal primitive (reset failed, start with the
//! saved settings) runs on the supervisor's host. It must not start or stop processes.

use crate::auth::{Admin, Joiner};
use crate::error::{ApiError, ApiJson};
use crate::namespace::Scope;
use crate::state::AppState;
use crate::supervisors::{REPORT_EVERY, STALE_AFTER, SupervisorKey};
use axum::Json;
use axum::extract::State;
use rota_api_types::supervisors::{
    FleetHealRequest, FleetHealResponse, HealEvent, HealPhase, LinkReply, LinkRequest, MAX_REPORTED_ERROR,
    SupervisorList, SupervisorReport, SupervisorState, SupervisorView,
};
use rota_domain::limits;
use rota_store::CredentialKind;
use rota_store::bus::Event;
use std::time::Duration;
use uuid::Uuid;

/// Longest a link call waits for a command.
const MAX_LINK_WAIT: Duration = Duration::from_secs(30);
/// A fleet heal waits this long for each heal's outcome unless told otherwise.
const DEFAULT_HEAL_WAIT: Duration = Duration::from_secs(60);
const MAX_HEAL_WAIT: Duration = Duration::from_secs(300);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks a report's fields and bounds its error text (it travels on the bus).
fn checked(mut r: SupervisorReport) -> Result<SupervisorReport, ApiError> {
    limits::check_text("report.host", &r.host, limits::MAX_HOST).map_err(ApiError::limit)?;
    limits::check_text("report.key", &r.key, limits::MAX_NAME).map_err(ApiError::limit)?;
    limits::check_text("report.instanceId", &r.instance_id, limits::MAX_NAME).map_err(ApiError::limit)?;
    rota_domain::namespace::check("report.namespace", &r.namespace).map_err(ApiError::limit)?;
    if let Some(w) = &r.worker {
        limits::check_text("report.worker", w, limits::MAX_NAME).map_err(ApiError::limit)?;
    }
    for text in [&mut r.last_error, &mut r.last_exit] {
        if let Some(t) = text.as_mut()
            && t.len() > MAX_REPORTED_ERROR
        {
            let mut cut = t.len() - MAX_REPORTED_ERROR;
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            *t = format!("…{}", &t[cut..]);
        }
    }
    if let Some(h) = r.heal.as_mut()
        && let Some(e) = h.error.as_mut()
        && e.len() > MAX_REPORTED_ERROR
    {
        e.truncate(e.char_indices().nth(MAX_REPORTED_ERROR / 4).map_or(e.len(), |(i, _)| i));
    }
    Ok(r)
}

/// A supervisor reports its state and waits (up to `waitMs`) for a heal.
#[utoipa::path(post, path = "/supervisor/link", tag = "worker", security(("join" = [])), request_body = LinkRequest,
    responses((status = 200, body = LinkReply), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn link(
    joiner: Joiner,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<Json<LinkReply>, ApiError> {
    let report = checked(req.report)?;
    let key: SupervisorKey = (report.host.clone(), report.key.clone());
    let changed = state.supervisors.get(&key).is_none_or(|(old, _)| old != report);
    if changed {
        tracing::info!(host = %report.host, key = %report.key, state = report.state.as_str(),
            worker = ?report.worker, "supervisor report");
        if let Some(h) = &report.heal {
            tracing::info!(host = %report.host, key = %report.key, heal = %h.id, phase = ?h.phase, "heal progress");
        }
    }
    let previous_heal = state.supervisors.get(&key).and_then(|(old, _)| old.heal);
    state.supervisors.report(report.clone());
    let mut events = Vec::new();
    if let Ok(text) = serde_json::to_string(&report) {
        events.push(Event::SupervisorReport { report: text });
    }
    // What the event stream shows: the state when it changed, heal progress as it moves.
    if changed {
        events.push(Event::Supervisor {
            host: report.host.clone(),
            instance: report.key.clone(),
            profile: report.worker.clone(),
            namespace: Some(report.namespace.clone()),
            state: report.state.as_str().to_string(),
            detail: report.last_error.as_ref().map(|e| e.chars().take(300).collect()),
        });
    }
    if let Some(h) = &report.heal
        && previous_heal.as_ref() != Some(h)
    {
        events.push(heal_event(
            h.id,
            phase_name(h.phase),
            Some(&report.host),
            &report.namespace,
            h.error.as_deref(),
        ));
    }
    state.publish(events);
    // A link still on the replaced join token (in its grace) is handed the new one.
    let join_token = if joiner.previous { handover(&state).await } else { None };
    let reply = |heal| {
        Json(LinkReply { heal, report_every_ms: millis(REPORT_EVERY), join_token: join_token.clone() })
    };
    let wait = Duration::from_millis(req.wait_ms).min(MAX_LINK_WAIT).min(state.config.max_poll);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.supervisors.subscribe();
    loop {
        changes.borrow_and_update();
        if let Some(id) = state.supervisors.pending_heal(&key) {
            tracing::info!(host = %key.0, key = %key.1, heal = %id, "heal handed to the supervisor");
            return Ok(reply(Some(id)));
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => return Ok(reply(None)),
            () = state.shutdown.cancelled() => return Ok(reply(None)),
        }
    }
}

fn phase_name(p: HealPhase) -> &'static str {
    match p {
        HealPhase::Starting => "starting",
        HealPhase::Healed => "healed",
        HealPhase::Failed => "failed",
    }
}

/// A heal's progress as the event stream shows it.
fn heal_event(id: Uuid, phase: &str, host: Option<&str>, namespace: &str, detail: Option<&str>) -> Event {
    Event::Heal {
        id,
        phase: phase.to_string(),
        host: host.map(str::to_string),
        namespace: Some(namespace.to_string()),
        detail: detail.map(|d| d.chars().take(300).collect()),
    }
}

fn view(report: SupervisorReport, age: Duration) -> SupervisorView {
    SupervisorView { report, report_age_ms: millis(age), stale: age > STALE_AFTER }
}

/// Every supervisor heard from, of the namespace (or all), by host and key.
#[utoipa::path(get, path = "/api/v1/supervisors", tag = "workers", security(("admin" = [])),
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = SupervisorList), (status = 401), (status = 403)))]
pub(crate) async fn list_supervisors(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
) -> Result<Json<SupervisorList>, ApiError> {
    let supervisors = state
        .supervisors
        .snapshot()
        .into_iter()
        .filter(|(r, _)| scope.sees(&r.namespace))
        .map(|(r, age)| view(r, age))
        .collect();
    Ok(Json(SupervisorList { supervisors }))
}

/// Heals every `failed` worker of the namespace (or all) whose supervisor is linked: the
/// one primitive (reset the failed state, start with the saved settings, never edit them)
/// runs on each host; the answer lists `starting` and `healed` / `failed` per worker, then
/// `done`. With `dryRun`, `detected` per worker and nothing changes.
#[utoipa::path(post, path = "/api/v1/workers/heal", tag = "workers", security(("admin" = [])),
    request_body = FleetHealRequest, params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = FleetHealResponse), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn heal(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<FleetHealRequest>,
) -> Result<Json<FleetHealResponse>, ApiError> {
    let wait = req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_HEAL_WAIT).min(MAX_HEAL_WAIT);
    if let Some(w) = &req.worker {
        rota_domain::limits::check_text("worker", w, rota_domain::limits::MAX_NAME)
            .map_err(ApiError::limit)?;
    }
    let only = |r: &SupervisorReport| {
        req.worker
            .as_ref()
            .is_none_or(|w| r.worker.as_ref() == Some(w) || (r.worker.is_none() && &r.key == w))
    };
    // Detection reads the cached reports only.
    let affected: Vec<SupervisorReport> = state
        .supervisors
        .snapshot()
        .into_iter()
        .filter(|(r, age)| {
            scope.sees(&r.namespace) && r.state == SupervisorState::Failed && *age <= STALE_AFTER && only(r)
        })
        .map(|(r, _)| r)
        .collect();
    let name = |r: &SupervisorReport| r.worker.clone().unwrap_or_else(|| r.key.clone());
    let mut events = Vec::new();
    if req.dry_run {
        for r in &affected {
            events.push(HealEvent {
                phase: "detected".into(),
                host: Some(r.host.clone()),
                worker: Some(name(r)),
                state: Some("failed".into()),
                error: r.last_error.clone(),
                ..HealEvent::default()
            });
        }
        events.push(HealEvent {
            phase: "done".into(),
            healed: Some(0),
            failed: Some(0),
            ..HealEvent::default()
        });
        return Ok(Json(FleetHealResponse { events }));
    }
    let mut started = Vec::new();
    for r in &affected {
        let id = Uuid::now_v7();
        let key: SupervisorKey = (r.host.clone(), r.key.clone());
        state.supervisors.queue_heal(&key, id);
        state.publish(vec![Event::HealCommand { host: key.0.clone(), key: key.1.clone(), id }]);
        tracing::info!(host = %key.0, key = %key.1, heal = %id, "heal queued for the supervisor");
        events.push(HealEvent {
            phase: "starting".into(),
            host: Some(r.host.clone()),
            worker: Some(name(r)),
            state: Some("failed".into()),
            ..HealEvent::default()
        });
        started.push((key, id, name(r)));
    }
    let (mut healed, mut failed) = (0usize, 0usize);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.supervisors.subscribe();
    let mut open = started;
    while !open.is_empty() {
        changes.borrow_and_update();
        open.retain(|(key, id, worker)| {
            let Some((r, _)) = state.supervisors.get(key) else { return true };
            let Some(h) = r.heal.filter(|h| h.id == *id) else { return true };
            let event = |phase: &str| HealEvent {
                phase: phase.into(),
                host: Some(key.0.clone()),
                worker: Some(r.worker.clone().unwrap_or_else(|| worker.clone())),
                ..HealEvent::default()
            };
            match h.phase {
                HealPhase::Starting => true,
                HealPhase::Healed => {
                    healed += 1;
                    events.push(HealEvent { pid: h.pid, ..event("healed") });
                    false
                }
                HealPhase::Failed => {
                    failed += 1;
                    events.push(HealEvent { error: h.error.clone(), ..event("failed") });
                    false
                }
            }
        });
        if open.is_empty() {
            break;
        }
        let why = tokio::select! {
            _ = changes.changed() => continue,
            () = tokio::time::sleep_until(deadline) => format!(
                "no outcome within {}: is its supervisor still linked? (rota worker list)",
                humantime::format_duration(wait)
            ),
            () = state.shutdown.cancelled() => "this server is shutting down; the heal may still finish".to_string(),
        };
        for (key, _, worker) in open.drain(..) {
            failed += 1;
            events.push(HealEvent {
                phase: "failed".into(),
                host: Some(key.0),
                worker: Some(worker),
                error: Some(why.clone()),
                ..HealEvent::default()
            });
        }
    }
    events.push(HealEvent {
        phase: "done".into(),
        healed: Some(healed),
        failed: Some(failed),
        ..HealEvent::default()
    });
    let summary = format!("{healed} healed, {failed} failed");
    state.publish(vec![heal_event(Uuid::now_v7(), "done", None, &scope.namespace, Some(&summary))]);
    Ok(Json(FleetHealResponse { events }))
}

/// The current join token, opened from the sealed copy a grace rotation stored; `None` (and
/// logged) if there is none or this server cannot open it (another secret key).
async fn handover(state: &AppState) -> Option<String> {
    let held = state.auth.credentials(state).await.ok()?;
    let sealed = held.previous.iter().find(|p| p.kind == CredentialKind::Join)?.handover.clone();
    let opened =
        sealed.and_then(|s| state.config.secret_key.as_ref()?.open_token(CredentialKind::Join.as_str(), &s));
    if opened.is_none() {
        tracing::warn!(
            "a supervisor links with the replaced join token, but the new one cannot be handed over (not \
             sealed, or under a secret key this server does not hold): it must be copied to that host"
        );
    }
    opened.map(|t| t.to_string())
}
