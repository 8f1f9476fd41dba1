//! The fleet page: hosts, workers and supervisors with their state, and a banner naming the
//! unhealthy ones with one Heal button (and one per worker) whose progress shows live.

use super::{Chrome, MAX_PAGE_ROWS, UiError, UiRequest, age, html};
use crate::auth::Admin;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use rota_api_types::supervisors::{SupervisorState, SupervisorView};
use rota_api_types::workers::{WorkerState, WorkerView};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
pub(crate) struct FleetQuery {
    /// Page of the workers table, from 0.
    #[serde(default)]
    page: usize,
}

pub(crate) struct HostRow {
    pub(crate) host: String,
    pub(crate) workers: usize,
    pub(crate) supervisors: usize,
    pub(crate) unhealthy: usize,
}

pub(crate) struct WorkerRow {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) state: &'static str,
    pub(crate) heartbeat_age: String,
    pub(crate) concurrency: u32,
    pub(crate) running: u32,
    pub(crate) queues: String,
    pub(crate) version: String,
}

pub(crate) struct SupervisorRow {
    pub(crate) host: String,
    pub(crate) worker: String,
    pub(crate) namespace: String,
    pub(crate) state: &'static str,
    pub(crate) restarts: u32,
    pub(crate) last_exit: String,
    pub(crate) last_error: String,
    pub(crate) report_age: String,
    pub(crate) failed: bool,
    pub(crate) healing: bool,
    /// The query of its own Heal button.
    pub(crate) heal_query: String,
}

pub(crate) struct HealLine {
    pub(crate) at: String,
    pub(crate) phase: String,
    pub(crate) host: String,
    pub(crate) worker: String,
    pub(crate) detail: String,
}

#[derive(Template)]
#[template(path = "ui/fleet_live.html")]
pub(crate) struct FleetLive {
    pub(crate) all: bool,
    pub(crate) nsq: String,
    pub(crate) hosts: Vec<HostRow>,
    pub(crate) workers: Vec<WorkerRow>,
    pub(crate) offline: usize,
    pub(crate) page: usize,
    pub(crate) pages: usize,
    pub(crate) supervisors: Vec<SupervisorRow>,
    pub(crate) unhealthy: Vec<String>,
    pub(crate) heals: Vec<HealLine>,
}

#[derive(Template)]
#[template(path = "ui/fleet.html")]
struct FleetPage {
    chrome: Chrome,
    live_url: String,
    live: String,
}

pub(crate) fn worker_state(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Active => "active",
        WorkerState::Draining => "draining",
        WorkerState::Stale => "stale",
        WorkerState::Offline => "offline",
    }
}

fn supervisor_row(v: &SupervisorView) -> SupervisorRow {
    let r = &v.report;
    SupervisorRow {
        host: r.host.clone(),
        worker: r.worker.clone().unwrap_or_else(|| r.key.clone()),
        namespace: r.namespace.clone(),
        state: if v.stale { "unlinked" } else { r.state.as_str() },
        restarts: r.restarts,
        last_exit: r.last_exit.clone().unwrap_or_default(),
        last_error: r.last_error.clone().unwrap_or_default(),
        report_age: format!("{}s", v.report_age_ms / 1000),
        failed: !v.stale && r.state == SupervisorState::Failed,
        healing: r.heal.as_ref().is_some_and(|h| h.phase == rota_api_types::supervisors::HealPhase::Starting),
        heal_query: format!(
            "ns={}&worker={}",
            super::urlencode(&r.namespace),
            super::urlencode(r.worker.as_deref().unwrap_or(&r.key))
        ),
    }
}

/// `GET /ui/fleet`.
pub(crate) async fn page(
    req: UiRequest,
    State(state): State<AppState>,
    Query(q): Query<FleetQuery>,
) -> Result<Response, UiError> {
    let live = live(&req, &state, q.page).await?;
    if req.fragment {
        return html(&live);
    }
    let chrome = req.chrome(&state, "Fleet", "fleet", "").await;
    let live_url = format!("/ui/fleet?{}&page={}", chrome.nsq(), q.page);
    html(&FleetPage { chrome, live_url, live: live.render()? })
}

async fn live(req: &UiRequest, state: &AppState, page: usize) -> Result<FleetLive, UiError> {
    let axum::Json(workers) =
        crate::routes::workers::list_workers(Admin, req.scope.clone(), State(state.clone())).await?;
    let axum::Json(supervisors) =
        crate::routes::supervisors::list_supervisors(Admin, req.scope.clone(), State(state.clone())).await?;
    let (live_workers, offline): (Vec<WorkerView>, Vec<WorkerView>) =
        workers.workers.into_iter().partition(|w| w.state != WorkerState::Offline);
    let mut hosts: BTreeMap<String, HostRow> = BTreeMap::new();
    for w in &live_workers {
        let e = hosts.entry(w.host.clone()).or_insert_with(|| HostRow {
            host: w.host.clone(),
            workers: 0,
            supervisors: 0,
            unhealthy: 0,
        });
        e.workers += 1;
        if w.state == WorkerState::Stale {
            e.unhealthy += 1;
        }
    }
    let supervisors: Vec<SupervisorRow> = supervisors.supervisors.iter().map(supervisor_row).collect();
    let mut unhealthy = Vec::new();
    for s in &supervisors {
        let e = hosts.entry(s.host.clone()).or_insert_with(|| HostRow {
            host: s.host.clone(),
            workers: 0,
            supervisors: 0,
            unhealthy: 0,
        });
        e.supervisors += 1;
        if s.failed {
            e.unhealthy += 1;
            unhealthy.push(format!("{} on {}", s.worker, s.host));
        }
    }
    for w in live_workers.iter().filter(|w| w.state == WorkerState::Stale) {
        unhealthy.push(format!("{} on {} (no heartbeat for {})", w.name, w.host, age(w.last_heartbeat_at)));
    }
    let pages = live_workers.len().div_ceil(MAX_PAGE_ROWS).max(1);
    let page = page.min(pages - 1);
    let workers = live_workers
        .iter()
        .skip(page * MAX_PAGE_ROWS)
        .take(MAX_PAGE_ROWS)
        .map(|w| WorkerRow {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            host: w.host.clone(),
            state: worker_state(w.state),
            heartbeat_age: age(w.last_heartbeat_at),
            concurrency: w.concurrency,
            running: w.running,
            queues: w.queues.join(", "),
            version: w.version.clone(),
        })
        .collect();
    let heals = state
        .feed
        .recent(12, |e| {
            e.kind == "heal" && (req.scope.all || e.namespace.as_deref() == Some(&req.scope.namespace))
        })
        .iter()
        .map(|e| HealLine {
            at: e.at.format("%H:%M:%S").to_string(),
            phase: e.state.clone().unwrap_or_default(),
            host: e.host.clone().unwrap_or_default(),
            worker: e.worker.clone().unwrap_or_default(),
            detail: e.detail.clone().unwrap_or_default(),
        })
        .collect();
    let mut supervisors = supervisors;
    supervisors.truncate(MAX_PAGE_ROWS);
    unhealthy.truncate(MAX_PAGE_ROWS);
    Ok(FleetLive {
        all: req.scope.all,
        nsq: format!("ns={}", super::urlencode(&req.ns)),
        hosts: hosts.into_values().take(MAX_PAGE_ROWS).collect(),
        workers,
        offline: offline.len(),
        page,
        pages,
        supervisors,
        unhealthy,
        heals,
    })
}
