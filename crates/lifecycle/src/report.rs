//! What `status`, `multi status` and `healthcheck` show: the local picture (supervisor
//! and worker, verified; phase, port, uptime, restarts, last exit and error, log) plus
//! the server's view of the worker (`GET /api/v1/workers`), reduced to one diagnostic
//! sentence and an exit code: 0 running and registered, 3 not running, 1 degraded.

use super::identity::{self, Liveness};
use super::paths::{DEFAULT_PROFILE, InstancePaths};
use super::procs::ProcId;
use super::state::{LastExit, Phase, RuntimeState};
use crate::saved::Saved;
use chrono::{DateTime, Utc};
use rota_api_types::workers::WorkerState;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code: running and registered.
pub const EXIT_RUNNING: u8 = 0;
/// Exit code: running, but something is wrong.
pub const EXIT_DEGRADED: u8 = 1;
/// Exit code: not running (stopped, failed, never started).
pub const EXIT_NOT_RUNNING: u8 = 3;

/// A verified process.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcView {
    /// Its pid.
    pub pid: i32,
    /// Seconds it has been running.
    pub uptime_s: Option<u64>,
}

impl ProcView {
    fn of(p: ProcId) -> Self {
        Self { pid: p.pid, uptime_s: p.uptime().map(|d| d.as_secs()) }
    }
}

/// The server's view of the worker.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    /// The server's base URL.
    pub url: String,
    /// active, draining, stale, offline, not_registered, unreachable, or unknown (no admin
    /// token).
    pub registration: &'static str,
    /// Its last heartbeat, as the server saw it.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Why the view is unreachable or unknown.
    pub error: Option<String>,
    /// The server's total log quota in use (`rota server status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<rota_api_types::jobs::LogQuotaUse>,
    /// Who leads the control plane, from `/healthz/detail` (`rota server status`, with the
    /// admin token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leadership: Option<rota_api_types::health::HealthDetail>,
    /// The declared pool in force, as the worker answered (`name (generation N)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Why the worker takes no work (a worker config's setup failed), as it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// When the server's TLS certificate expires (`rota server status`; RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_not_after: Option<String>,
}

/// `rota worker status --json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The worker's key (file name stem).
    pub key: String,
    /// Profile (`default` for the default one); null for a node.
    pub profile: Option<String>,
    /// `multi` node name.
    pub node: Option<String>,
    /// never_started, starting, running, backoff, stopping, stopped, failed, unverified,
    /// unsupervised (the supervisor died; its worker still runs until its steps end).
    pub state: &'static str,
    /// True when a verified worker process runs.
    pub running: bool,
    /// The supervisor, if verified alive.
    pub supervisor: Option<ProcView>,
    /// The worker process, if verified alive.
    pub worker: Option<ProcView>,
    /// The name it registered under (or will).
    pub name: Option<String>,
    /// The local control port.
    pub port: Option<u16>,
    /// Restarts by the current supervisor.
    pub restarts: u32,
    /// The last exit of a worker process.
    pub last_exit: Option<LastExit>,
    /// The last error recorded.
    pub last_error: Option<String>,
    /// Why it is `failed`.
    pub failed_reason: Option<String>,
    /// Stopped by `rota worker stop` (heal leaves it alone).
    pub stopped_by_user: bool,
    /// The log file.
    pub log_path: Option<PathBuf>,
    /// The pid file.
    pub pidfile: Option<PathBuf>,
    /// The state file.
    pub state_path: PathBuf,
    /// The server's view.
    pub server: Option<ServerView>,
    /// One sentence: what is going on and what to do.
    pub diagnostic: String,
    /// Files that were quarantined and similar notices.
    pub warnings: Vec<String>,
}

impl Status {
    /// 0 running and registered, 3 not running, 1 degraded.
    pub fn exit_code(&self) -> u8 {
        if !self.running {
            return EXIT_NOT_RUNNING;
        }
        let registered =
            self.server.as_ref().is_some_and(|s| matches!(s.registration, "active" | "unknown" | "serving"));
        if self.state == "running" && registered { EXIT_RUNNING } else { EXIT_DEGRADED }
    }
}

/// The local half of the status (no network).
pub fn local(paths: &InstancePaths, meta: Option<&Saved>) -> crate::error::Result<Status> {
    let probe = identity::probe_settled(paths, Duration::from_millis(500))?;
    let mut warnings = Vec::new();
    if let Some((to, why)) = &probe.quarantined {
        warnings.push(format!("the state file could not be trusted ({why}); moved to {}", to.display()));
    }
    let st = probe.state.clone().unwrap_or_default();
    let (state, supervisor, worker) = match &probe.liveness {
        Liveness::Alive(a) => {
            (st.phase.as_str(), Some(ProcView::of(a.supervisor)), a.worker.map(ProcView::of))
        }
        Liveness::Unverified => ("unverified", None, None),
        // The supervisor died but the worker it ran still runs (draining): it is running,
        // and it is nobody's to restart. `start` and `heal` stop it before starting anew.
        Liveness::Dead if let Some(w) = super::halt::orphan(paths, &st) => {
            ("unsupervised", None, Some(ProcView::of(w)))
        }
        Liveness::Dead if meta.is_none() && probe.state.is_none() => ("never_started", None, None),
        Liveness::Dead if st.phase == Phase::Failed => ("failed", None, None),
        Liveness::Dead => ("stopped", None, None),
    };
    let running = worker.is_some();
    let expected_name = meta.map(expected_name);
    Ok(Status {
        key: paths.key.clone(),
        profile: match &paths.instance {
            super::paths::Instance::Profile(p) => Some(p.clone()),
            super::paths::Instance::Node(_) | super::paths::Instance::Server => None,
        },
        node: meta.and_then(|m| m.node.clone()),
        state,
        running,
        supervisor,
        worker,
        name: st.worker_name.clone().or(expected_name),
        port: if running { st.port } else { None },
        restarts: st.restarts,
        last_exit: st.last_exit.clone(),
        last_error: st.last_error.clone(),
        failed_reason: if st.phase == Phase::Failed { st.failed_reason.clone() } else { None },
        stopped_by_user: st.stopped_by_user,
        log_path: meta.map(|m| m.log_path.clone()),
        pidfile: meta.map(|m| m.pidfile.clone()),
        state_path: paths.state.clone(),
        server: None,
        diagnostic: String::new(),
        warnings,
    }
    .with_unexpected_death(&probe.liveness, &st))
}

impl Status {
    /// A supervisor that died without recording it (killed, machine rebooted).
    fn with_unexpected_death(mut self, liveness: &Liveness, st: &RuntimeState) -> Self {
        if matches!(liveness, Liveness::Dead)
            && !st.stopped_by_user
            && matches!(st.phase, Phase::Running | Phase::Starting | Phase::Backoff | Phase::Stopping)
        {
            self.warnings.push(format!(
                "the state says {}, but no supervisor holds the lock: it died unexpectedly (`rota worker heal` restarts it)",
                st.phase.as_str()
            ));
        }
        self
    }
}

/// The name a worker registers under, from its settings.
pub fn expected_name(meta: &Saved) -> String {
    if let Some(n) = meta.worker.name.clone().or_else(|| meta.node.clone()) {
        return n;
    }
    let host = rota_worker::host_name();
    match &meta.worker.profile {
        Some(p) if p != DEFAULT_PROFILE => format!("{p}@{host}"),
        _ => host,
    }
}

/// Asks the server about the worker (a few seconds at most).
pub async fn server_view(
    server: &str,
    token: Option<String>,
    name: &str,
    ca: &rota_client::CaCerts,
) -> ServerView {
    let mut view = ServerView {
        url: server.to_string(),
        registration: "unknown",
        last_heartbeat_at: None,
        error: None,
        logs: None,
        leadership: None,
        pool: None,
        degraded: None,
        tls_not_after: None,
    };
    let client = match rota_client::Client::trusting(server, token.clone(), ca) {
        Ok(c) => c,
        Err(e) => {
            view.error = Some(e.to_string());
            return view;
        }
    };
    let limit = Duration::from_secs(3);
    if token.is_none() {
        match tokio::time::timeout(limit, client.healthz()).await {
            Ok(Ok(_)) => {
                view.error = Some("no admin token (ROTA_TOKEN or the local admin.token file)".into())
            }
            Ok(Err(e)) => unreachable(&mut view, e.to_string()),
            Err(_) => unreachable(&mut view, format!("no answer within {}s", limit.as_secs())),
        }
        return view;
    }
    match tokio::time::timeout(limit, client.list_workers()).await {
        Ok(Ok(list)) => match list.workers.iter().find(|w| w.name == name) {
            Some(w) => {
                view.registration = match w.state {
                    WorkerState::Active => "active",
                    WorkerState::Draining => "draining",
                    WorkerState::Stale => "stale",
                    WorkerState::Offline => "offline",
                };
                view.last_heartbeat_at = Some(w.last_heartbeat_at);
                if w.state == WorkerState::Active {
                    ask_stats(&client, name, &mut view).await;
                }
            }
            None => view.registration = "not_registered",
        },
        Ok(Err(e)) if e.is_unreachable() => unreachable(&mut view, format!("{e:#}")),
        Ok(Err(e)) => view.error = Some(e.to_string()),
        Err(_) => unreachable(&mut view, format!("no answer within {}s", limit.as_secs())),
    }
    view
}

/// The worker's own answer to `stats`, through the server: the pool in force and whether
/// a worker config keeps it from taking work. Best effort: no answer within a second
/// leaves both unknown.
async fn ask_stats(client: &rota_client::Client, name: &str, view: &mut ServerView) {
    let req = rota_api_types::fleet::FleetRequest {
        command: rota_api_types::fleet::FleetCommand::Stats,
        workers: vec![name.to_string()],
        timeout_ms: Some(1000),
        mode: None,
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(3), client.fleet(&req)).await else { return };
    for r in resp.replies {
        if let rota_api_types::worker::Reply::Stats(s) = r.reply {
            view.pool = s.pool.map(|p| match s.pool_generation {
                Some(g) => format!("{p} (generation {g})"),
                None => p,
            });
            view.degraded = s.degraded;
        }
    }
}

fn unreachable(view: &mut ServerView, error: String) {
    view.registration = "unreachable";
    view.error = Some(error);
}

/// The background server's own view: does it answer `GET /healthz` at `url`? With the
/// admin `token`, `GET /healthz/detail` also says who leads.
pub async fn health_view(url: &str, token: Option<String>, ca: &rota_client::CaCerts) -> ServerView {
    let mut view = ServerView {
        url: url.to_string(),
        registration: "serving",
        last_heartbeat_at: None,
        error: None,
        logs: None,
        leadership: None,
        pool: None,
        degraded: None,
        tls_not_after: None,
    };
    let limit = Duration::from_secs(3);
    let has_token = token.is_some();
    let client = match rota_client::Client::trusting(url, token, ca) {
        Err(e) => {
            unreachable(&mut view, e.to_string());
            return view;
        }
        Ok(c) => c,
    };
    match tokio::time::timeout(limit, client.healthz()).await {
        Ok(Ok(health)) => {
            view.logs = health.logs;
            view.tls_not_after = health.tls_not_after;
        }
        Ok(Err(e)) => unreachable(&mut view, format!("{e:#}")),
        Err(_) => unreachable(&mut view, format!("no answer within {}s", limit.as_secs())),
    }
    if has_token && view.error.is_none() {
        match tokio::time::timeout(limit, client.healthz_detail()).await {
            Ok(Ok(detail)) => view.leadership = Some(detail),
            Ok(Err(e)) => view.error = Some(format!("cannot tell who leads: {e:#}")),
            Err(_) => {
                view.error = Some(format!("cannot tell who leads: no answer within {}s", limit.as_secs()))
            }
        }
    }
    view
}

/// One sentence: what is going on, and what to do about it.
pub fn diagnose(s: &Status) -> String {
    let sel = match (&s.node, &s.profile) {
        (Some(n), _) => format!(" {n}"),
        (None, Some(p)) if p != DEFAULT_PROFILE => format!(" --profile {p}"),
        _ => String::new(),
    };
    let (start, heal) = if s.node.is_some() {
        (format!("rota worker multi start{sel}"), "rota worker heal".to_string())
    } else if s.key == "server" {
        ("rota server start".to_string(), "rota worker heal".to_string())
    } else {
        (format!("rota worker start{sel}"), "rota worker heal".to_string())
    };
    let log = s.log_path.as_ref().map(|p| format!("; see {}", p.display())).unwrap_or_default();
    match s.state {
        "never_started" => format!("Never started on this machine; run `{start}`."),
        "unverified" => "Something holds the worker's lock but is not the recorded supervisor; run `rota worker diagnose`.".into(),
        "failed" => format!(
            "Failed: {}{log}; fix the cause, then run `{start}` or `{heal}`.",
            s.failed_reason.as_deref().unwrap_or("no reason recorded")
        ),
        "stopped" if !s.warnings.is_empty() && !s.stopped_by_user => {
            format!("Not running: it died unexpectedly{log}; `{heal}` starts it again.")
        }
        "stopped" if s.stopped_by_user => format!("Not running (stopped on purpose); `{start}` starts it."),
        "stopped" => format!("Not running; `{start}` starts it."),
        "backoff" => format!(
            "Restarting after a crash (restart {}): {}{log}.",
            s.restarts,
            s.last_error.as_deref().unwrap_or("no error recorded")
        ),
        "unsupervised" => format!(
            "Unsupervised: the supervisor died, but its {} (pid {}) still runs; it takes no new work and exits once its running steps end (drain timeout). Nothing will restart it: `{start}` or `{heal}` stops it and starts a supervised one{log}.",
            if s.key == "server" { "server" } else { "worker" },
            s.worker.as_ref().map_or_else(|| "?".to_string(), |w| w.pid.to_string())
        ),
        "starting" if s.key == "server" => "Starting: the server does not listen yet.".into(),
        "starting" => "Starting: the worker has not registered with the server yet.".into(),
        "stopping" => "Stopping.".into(),
        _ => match &s.server {
            Some(v) if v.registration == "active" && v.degraded.is_some() => format!(
                "Running and registered with {}, but taking no work until a worker config changes: {}.",
                v.url,
                v.degraded.as_deref().unwrap_or_default()
            ),
            Some(v) if v.registration == "active" => format!("Running and registered with {} (active).", v.url),
            Some(v) if v.registration == "serving" => format!("Running and serving on {}.", v.url),
            Some(v) if v.registration == "unreachable" && s.key == "server" => format!(
                "Running, but it does not answer on {} ({}).",
                v.url,
                v.error.as_deref().unwrap_or("no answer")
            ),
            Some(v) if v.registration == "unreachable" => format!(
                "Running, but the server {} is unreachable ({}); the worker keeps retrying.",
                v.url,
                v.error.as_deref().unwrap_or("no answer")
            ),
            Some(v) if v.registration == "not_registered" => {
                format!("Running, but {} does not list it: it is not registered (or registered under another name).", v.url)
            }
            Some(v) if v.registration == "unknown" => format!(
                "Running; the server {} is reachable but its view is unknown ({}).",
                v.url,
                v.error.as_deref().unwrap_or("no details")
            ),
            Some(v) => format!("Running, but the server sees it as {} (last heartbeat {}).", v.registration,
                v.last_heartbeat_at.map(|t| rota_domain::units::age(t, Utc::now()) + " ago").unwrap_or_else(|| "never".into())),
            None => "Running.".into(),
        },
    }
}
