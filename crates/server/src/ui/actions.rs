//! What the dashboard's buttons do: each is the API handler the CLI calls, behind the
//! dashboard's session and cross-site checks (`UiAction`), answered with a short message
//! htmx puts in the page's status line. Progress that takes time (a heal) shows live
//! through the event stream, not here.

use super::{UiAction, UiError};
use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use rota_api_types::fleet::RevokeRequest;
use rota_api_types::resources::{ApplyRequest, ResourceDocument, ResourceSpec, RunRequest, ScheduleDocument};
use rota_api_types::supervisors::FleetHealRequest;
use rota_domain::JobId;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Template)]
#[template(path = "ui/flash.html")]
struct Flash<'a> {
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

fn flash(message: &str) -> Result<Response, UiError> {
    Ok(Html(Flash { message, link: None }.render()?).into_response())
}

#[derive(Deserialize)]
pub(crate) struct HealQuery {
    worker: Option<String>,
}

/// `POST /ui/heal[?worker=NAME]`: heals the namespace's failed workers (or one), as
/// `rota worker heal --fleet` does; answers once each heal has an outcome.
pub(crate) async fn heal(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Query(q): Query<HealQuery>,
) -> Result<Response, UiError> {
    let body = FleetHealRequest { dry_run: false, timeout_ms: None, worker: q.worker };
    let axum::Json(resp) =
        crate::routes::supervisors::heal(Admin, req.scope, State(state), ApiJson(body)).await?;
    let done = resp.events.iter().find(|e| e.phase == "done");
    let (healed, failed) = done.map_or((0, 0), |d| (d.healed.unwrap_or(0), d.failed.unwrap_or(0)));
    let failures: Vec<String> = resp
        .events
        .iter()
        .filter(|e| e.phase == "failed")
        .map(|e| format!("{}: {}", e.worker.clone().unwrap_or_default(), e.error.clone().unwrap_or_default()))
        .collect();
    let mut message = match (healed, failed) {
        (0, 0) => "Nothing to heal: no linked supervisor reports a failed worker.".to_string(),
        _ => format!("Heal: {healed} healed, {failed} failed."),
    };
    if !failures.is_empty() {
        message.push(' ');
        message.push_str(&failures.join("; "));
    }
    flash(&message)
}

/// `POST /ui/jobs/{id}/cancel`.
pub(crate) async fn cancel(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
) -> Result<Response, UiError> {
    let axum::Json(s) = crate::routes::jobs::cancel_job(Admin, req.scope, State(state), ApiPath(id)).await?;
    flash(&format!("Job {id}: {}.", s.state))
}

/// `POST /ui/jobs/{id}/retry`.
pub(crate) async fn retry(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
) -> Result<Response, UiError> {
    let axum::Json(s) = crate::routes::jobs::retry_job(Admin, req.scope, State(state), ApiPath(id)).await?;
    flash(&format!("Job {id}: {} again.", s.state))
}

/// `POST /ui/jobs/{id}/revoke`: revokes and terminates its running steps (`rota worker
/// revoke ID --terminate`).
pub(crate) async fn revoke(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
) -> Result<Response, UiError> {
    let body =
        RevokeRequest { jobs: vec![id], keys: Vec::new(), terminate: true, signal: None, expires_ms: None };
    let axum::Json(resp) =
        crate::routes::fleet::revoke(Admin, req.scope, State(state), ApiJson(body)).await?;
    let terminated: u32 = resp.results.iter().map(|r| r.terminated).sum();
    flash(&format!("Job {id}: revoked; {terminated} running steps told to terminate."))
}

/// `POST /ui/queues/{queue}/pause`.
pub(crate) async fn pause(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Response, UiError> {
    let _ = crate::routes::fleet::pause_queue(Admin, req.scope, State(state), ApiPath(queue.clone())).await?;
    flash(&format!("Queue {queue} paused: no worker claims from it until it is resumed."))
}

/// `POST /ui/queues/{queue}/resume`.
pub(crate) async fn resume(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Response, UiError> {
    let _ =
        crate::routes::fleet::resume_queue(Admin, req.scope, State(state), ApiPath(queue.clone())).await?;
    flash(&format!("Queue {queue} resumed."))
}

/// `POST /ui/workflows/{name}/run`: the form's fields are the inputs (empty ones left out,
/// so their defaults apply), typed and checked by the server as for `rota run`.
pub(crate) async fn run_workflow(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form(fields): Form<BTreeMap<String, String>>,
) -> Result<Response, UiError> {
    let inputs = fields.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let ns = req.ns.clone();
    let (_, axum::Json(resp)) = crate::routes::resources::run(
        Admin,
        req.scope,
        State(state),
        ApiPath(name.clone()),
        HeaderMap::new(),
        ApiJson(RunRequest { inputs, on: None }),
    )
    .await?;
    let link = format!("/ui/jobs/{}?ns={}", resp.id, super::urlencode(&ns));
    let message = format!("Workflow {name} started: job {}.", resp.id);
    Ok(Html(Flash { message: &message, link: Some((&link, "open it")) }.render()?).into_response())
}

/// Sets a schedule's `suspend` by applying its document with only that changed (so it is
/// one more generation, as `rota apply` would make it).
async fn set_suspend(
    req: super::UiRequest,
    state: AppState,
    name: String,
    suspend: bool,
) -> Result<Response, UiError> {
    let axum::Json(view) = crate::routes::resources::get(
        Admin,
        req.scope.clone(),
        State(state.clone()),
        ApiPath(("schedules".to_string(), name.clone())),
    )
    .await?;
    let ResourceSpec::Schedule(mut spec) = view.spec else {
        return Err(ApiError::bad_request(format!("{name} is not a schedule")).into());
    };
    spec.suspend = suspend;
    let metadata = rota_domain::resource::Metadata {
        name: view.metadata.name,
        namespace: view.metadata.namespace,
        labels: view.metadata.labels,
    };
    let doc =
        ResourceDocument::Schedule(ScheduleDocument { api_version: Some(view.api_version), metadata, spec });
    let _ = crate::routes::resources::apply(
        Admin,
        req.scope,
        State(state),
        ApiJson(ApplyRequest { documents: vec![doc], dry_run: false }),
    )
    .await?;
    flash(&format!(
        "Schedule {name} {}.",
        if suspend { "suspended: no run starts until it is resumed" } else { "resumed" }
    ))
}

/// `POST /ui/schedules/{name}/suspend`.
pub(crate) async fn suspend(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    set_suspend(req, state, name, true).await
}

/// `POST /ui/schedules/{name}/resume`.
pub(crate) async fn unsuspend(
    UiAction(req): UiAction,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    set_suspend(req, state, name, false).await
}
