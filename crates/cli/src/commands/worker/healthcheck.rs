//! `rota worker healthcheck [--node N] [--pidfile T] [--json]`: exit 0 iff that worker is
//! alive (instance lock held, supervisor and worker verified in /proc, registered); 3 if
//! not running, 1 if its supervisor runs but the worker does not. Local only (no
//! network), so it fits systemd `ExecStartPost=` and Kubernetes probes.

use crate::args::{GlobalArgs, HealthcheckArgs};
use crate::failure::usage;
use crate::output::Out;
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use rota_lifecycle::identity::{self, Liveness};
use rota_lifecycle::paths::{Dirs, Instance, InstancePaths};
use rota_lifecycle::report::{EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_RUNNING};
use rota_lifecycle::saved::all_saved;
use rota_lifecycle::state::Phase;
use rota_lifecycle::template;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `rota worker healthcheck --json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    alive: bool,
    key: String,
    state: &'static str,
    /// The supervisor's pid (the one in the pid file).
    pid: Option<i32>,
    /// The worker process's pid.
    worker_pid: Option<i32>,
    /// When the supervisor started.
    started_at: Option<DateTime<Utc>>,
    /// Seconds the worker process has been running.
    uptime_s: Option<u64>,
    port: Option<u16>,
    pidfile: Option<PathBuf>,
}

pub(super) fn healthcheck(global: &GlobalArgs, args: &HealthcheckArgs) -> Result<ExitCode> {
    let dirs = Dirs::from_env()?;
    let paths = resolve(&dirs, args)?;
    let saved = all_saved(&dirs)?.into_iter().find(|(p, _)| p.key == paths.key).and_then(|(_, m)| m.ok());
    let probe = identity::probe_settled(&paths, Duration::from_millis(500))?;
    let st = probe.state.clone().unwrap_or_default();
    let (code, state, sup, worker) = match &probe.liveness {
        Liveness::Alive(a) if a.worker.is_some() && st.phase == Phase::Running => {
            (EXIT_RUNNING, "running", Some(a.supervisor), a.worker)
        }
        Liveness::Alive(a) => (EXIT_DEGRADED, st.phase.as_str(), Some(a.supervisor), None),
        Liveness::Unverified => (EXIT_NOT_RUNNING, "unverified", None, None),
        Liveness::Dead if st.phase == Phase::Failed => (EXIT_NOT_RUNNING, "failed", None, None),
        Liveness::Dead => (EXIT_NOT_RUNNING, "not_running", None, None),
    };
    let h = Health {
        alive: code == EXIT_RUNNING,
        key: paths.key.clone(),
        state,
        pid: sup.map(|s| s.pid),
        worker_pid: worker.map(|w| w.pid),
        started_at: sup.and(st.started_at),
        uptime_s: worker.and_then(|w| w.uptime()).map(|d| d.as_secs()),
        port: worker.and(st.port),
        pidfile: saved.map(|m| m.pidfile),
    };
    let mut out = Out::new();
    if global.json {
        out.json(&h)?;
    } else if h.alive {
        writeln!(
            out,
            "{}: alive (pid {}, worker pid {}, up {}s)",
            paths.instance,
            h.pid.unwrap_or_default(),
            h.worker_pid.unwrap_or_default(),
            h.uptime_s.unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{}: not alive ({})", paths.instance, h.state.replace('_', " "))?;
    }
    Ok(ExitCode::from(code))
}

/// `--node`, else the worker whose saved pid file is `--pidfile`, else the profile's.
fn resolve(dirs: &Dirs, args: &HealthcheckArgs) -> Result<InstancePaths> {
    let node = args.node.as_deref().map(Instance::node).transpose()?;
    let Some(template) = &args.pidfile else {
        return Ok(dirs.instance(&match node {
            Some(n) => n,
            None => Instance::profile(args.profile.profile.as_deref())?,
        }));
    };
    let host = rota_worker::host_name();
    let name = args.node.clone().unwrap_or_default();
    if name.is_empty() && template.contains("%n") {
        return Err(usage(format!("--pidfile '{template}' uses %n: give --node as well")));
    }
    let v = template::Vars { node: &name, host: &host, index: 1, timestamp: "" };
    let path = PathBuf::from(template::expand(template, &v).map_err(|e| usage(format!("--pidfile: {e}")))?);
    let path = std::path::absolute(&path).unwrap_or(path);
    let found = all_saved(dirs)?.into_iter().find(|(_, m)| m.as_ref().is_ok_and(|m| m.pidfile == path));
    match (found, node) {
        (Some((p, _)), Some(n)) if p.instance != n => {
            Err(usage(format!("{} belongs to {}, not {n}", path.display(), p.instance)))
        }
        (Some((p, _)), _) => Ok(p),
        (None, Some(n)) => Ok(dirs.instance(&n)),
        (None, None) => Err(anyhow!(
            "no background worker of this user uses the pid file {} (`rota worker diagnose` checks it)",
            path.display()
        )),
    }
}
