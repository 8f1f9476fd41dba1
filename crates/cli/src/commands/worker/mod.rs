//! `rota worker start|stop|restart|status|logs|heal|multi|healthcheck|diagnose`: the
//! background worker commands. They run without an async runtime (a small one is built
//! only for network calls), parse their flags into the `lifecycle` module's requests,
//! and print. `rota worker run` lives in `worker_run.rs`, `supervise` in `lifecycle`.

mod diagnose;
mod enable;
pub(crate) mod heal;
mod healthcheck;
mod logs;
mod multi;
mod start;
pub(crate) use start::{LaunchView, json_failure};
mod status;
mod stop;

use crate::args::{GlobalArgs, SupervisionArgs, WorkerCommand, WorkerRunArgs};
use crate::config::{Paths, server_url};
use anyhow::Result;
use rota_lifecycle::saved::Overrides;
use std::process::ExitCode;

/// Runs a background-worker command (not `run`, not `supervise`).
pub(crate) fn run(global: &GlobalArgs, command: WorkerCommand, paths: &Paths) -> Result<ExitCode> {
    match command {
        WorkerCommand::Start(args) => start::start(global, &args),
        WorkerCommand::Stop(args) => stop::stop(global, &args),
        WorkerCommand::Restart(args) => stop::restart(global, &args),
        WorkerCommand::Status(args) => status::status(global, &args, paths),
        WorkerCommand::Logs(args) => logs::logs(&args),
        WorkerCommand::Heal(args) => heal::heal(global, &args),
        WorkerCommand::Multi(args) => multi::multi(global, &args, paths),
        WorkerCommand::Healthcheck(args) => healthcheck::healthcheck(global, &args),
        WorkerCommand::Diagnose(args) => diagnose::diagnose(global, &args),
        WorkerCommand::Enable(args) => enable::enable(&args),
        WorkerCommand::Disable(args) => enable::disable(&args),
        WorkerCommand::Run(_) | WorkerCommand::Supervise(_) | WorkerCommand::Fleet(_) => {
            Err(anyhow::anyhow!("internal error: {command:?} is not a background-worker command"))
        }
    }
}

/// The server to save: `--server`/`ROTA_SERVER` when given, else keep the saved one.
fn server_override(global: &GlobalArgs) -> Result<Option<String>> {
    if global.server_given { Ok(Some(server_url(&global.server)?)) } else { Ok(None) }
}

/// `start`'s flags as settings to save.
fn overrides(global: &GlobalArgs, run: &WorkerRunArgs, sv: &SupervisionArgs) -> Result<Overrides> {
    if run.log_file && run.log_path.is_none() {
        crate::output::note("note: --log-file is the default for background workers");
    }
    // `--replace` is deliberately not saved: it takes the name over once, for this start;
    // a restart or `heal` with it would take the name from whoever holds it.
    Ok(Overrides {
        worker: run.settings(server_override(global)?, global.namespace.clone()),
        ca_cert: global.ca_cert.clone(),
        join_token: run.join_token.clone(),
        bind: run.bind.clone(),
        log_path: run.log_path.clone(),
        test_crash_file: run.test_crash_file(),
        test_hang_control: run.test_hang_control(),
        ..supervision(sv)
    })
}

/// The supervision flags as overrides.
pub(crate) fn supervision(sv: &SupervisionArgs) -> Overrides {
    Overrides {
        restart_delay: sv.restart_delay,
        max_restarts: sv.max_restarts,
        restart_window: sv.restart_window,
        min_uptime: sv.min_uptime,
        ..Overrides::default()
    }
}

/// `1.2s`, `850ms`.
pub(crate) fn took(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
