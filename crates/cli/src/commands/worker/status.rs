//! `rota worker status`: the background worker's local state (verified processes, phase,
//! port, uptime, restarts, last exit and error, log), the server's view of it, and one
//! diagnostic sentence. Exit 0 running and registered, 3 not running (including
//! `failed`), 1 degraded. `--json` prints the `Status` object documented in the README.

use crate::args::{GlobalArgs, StatusArgs};
use crate::config::{ClientSettings, Paths};
use crate::output::{Out, or_dash};
use anyhow::{Context, Result};
use rota_lifecycle::paths::{Dirs, Instance, InstancePaths};
use rota_lifecycle::report::{self, Status};
use rota_lifecycle::saved;
use std::process::ExitCode;

pub(super) fn status(global: &GlobalArgs, args: &StatusArgs, paths: &Paths) -> Result<ExitCode> {
    let instance = Instance::profile(args.profile.profile.as_deref())?;
    let dirs = Dirs::from_env()?;
    let ipaths = dirs.instance(&instance);
    let s = status_of(global, &ipaths, paths)?;
    let code = s.exit_code();
    if global.json {
        Out::new().json(&s)?;
    } else {
        print(&instance, &s)?;
    }
    Ok(ExitCode::from(code))
}

/// The full status of one worker (local, then the server's view).
pub(super) fn status_of(global: &GlobalArgs, ipaths: &InstancePaths, paths: &Paths) -> Result<Status> {
    let mut notes = Vec::new();
    let meta = saved::load(ipaths, &mut notes)?;
    let mut s = report::local(ipaths, meta.as_ref())?;
    s.warnings.extend(notes);
    if let Some(meta) = &meta {
        let token = ClientSettings::from_args(global, paths).map(|c| c.token).unwrap_or(None);
        let name = s.name.clone().unwrap_or_else(|| report::expected_name(meta));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        // What the worker trusts, unless this command line says otherwise.
        let ca = match global.ca_cert.as_ref().or(meta.ca_cert.as_ref()) {
            Some(f) => rota_client::CaCerts::from_pem_file(f)?,
            None => rota_client::CaCerts::default(),
        };
        s.server = Some(runtime.block_on(report::server_view(&meta.url(), token, &name, &ca)));
    }
    s.diagnostic = report::diagnose(&s);
    Ok(s)
}

fn print(instance: &Instance, s: &Status) -> Result<()> {
    let mut out = Out::new();
    let mut row = |k: &str, v: String| writeln!(out, "{k:<12}{v}");
    row("worker", instance.to_string())?;
    row("state", s.state.to_string())?;
    let proc = |p: &Option<report::ProcView>| match p {
        Some(p) => match p.uptime_s {
            Some(u) => {
                format!("{} (up {})", p.pid, humantime::format_duration(std::time::Duration::from_secs(u)))
            }
            None => p.pid.to_string(),
        },
        None => "-".into(),
    };
    row("worker pid", proc(&s.worker))?;
    row("supervisor", proc(&s.supervisor))?;
    row("name", or_dash(s.name.as_deref()).to_string())?;
    row("port", s.port.map_or("-".into(), |p| p.to_string()))?;
    row("restarts", s.restarts.to_string())?;
    let last_exit = s.last_exit.as_ref().map(|e| {
        let how = match (e.code, e.signal) {
            (Some(c), _) => format!("code {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "?".into(),
        };
        format!("{how} ({:?}, {} ago)", e.kind, crate::output::age(e.at, chrono::Utc::now())).to_lowercase()
    });
    row("last exit", or_dash(last_exit.as_deref()).to_string())?;
    row("last error", or_dash(s.last_error.as_deref()).to_string())?;
    row("log", s.log_path.as_ref().map_or("-".into(), |p| p.display().to_string()))?;
    if let Some(v) = &s.server {
        let hb = v
            .last_heartbeat_at
            .map(|t| format!(", last heartbeat {} ago", crate::output::age(t, chrono::Utc::now())))
            .unwrap_or_default();
        row("server", format!("{}: {}{hb}", v.url, v.registration.replace('_', " ")))?;
        if let Some(p) = &v.pool {
            row("pool", p.clone())?;
        }
        if let Some(d) = &v.degraded {
            row("degraded", d.clone())?;
        }
    }
    for w in &s.warnings {
        row("warning", w.clone())?;
    }
    row("diagnosis", s.diagnostic.clone())
}
