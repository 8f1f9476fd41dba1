//! `rota worker start`: start or reuse this host's background worker (per profile) and
//! return once it registered (or failed: exit 1 with the log path, its last lines and
//! the foreground command). Prints what happened; `--json` prints it as one object.

use super::{overrides, took};
use crate::args::{GlobalArgs, StartArgs};
use crate::config::server_url;
use crate::output::{Out, note};
use anyhow::Result;
use rota_lifecycle::launch::{self, Launched, Outcome, StartRequest};
use rota_lifecycle::paths::{Dirs, Instance};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `rota worker start --json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LaunchView {
    /// started or reused.
    outcome: &'static str,
    /// The worker's key.
    key: String,
    /// The worker's pid (null with --no-wait).
    pid: Option<i32>,
    /// The supervisor's pid.
    supervisor_pid: i32,
    /// The registered name.
    name: Option<String>,
    /// The control port.
    port: Option<u16>,
    /// The server.
    server: String,
    /// The log file.
    log_path: PathBuf,
    /// How long it took, in milliseconds.
    took_ms: u64,
    /// Notices (stale files removed, a failed worker reset, ...).
    notes: Vec<String>,
}

impl LaunchView {
    pub(crate) fn of(key: &str, l: &Launched) -> Self {
        Self {
            outcome: match l.outcome {
                Outcome::Started => "started",
                Outcome::Reused => "reused",
            },
            key: key.to_string(),
            pid: l.pid,
            supervisor_pid: l.supervisor_pid,
            name: l.name.clone(),
            port: l.port,
            server: l.meta.url(),
            log_path: l.meta.log_path.clone(),
            took_ms: u64::try_from(l.took.as_millis()).unwrap_or(u64::MAX),
            notes: l.notes.clone(),
        }
    }
}

pub(super) fn start(global: &GlobalArgs, args: &StartArgs) -> Result<ExitCode> {
    let instance = Instance::profile(args.run.profile.as_deref())?;
    let dirs = Dirs::from_env()?;
    let paths = dirs.instance(&instance);
    let req = StartRequest {
        overrides: overrides(global, &args.run, &args.supervision)?,
        default_server: server_url(&global.server)?,
        wait: (!args.wait.no_wait).then_some(args.wait.wait_timeout),
        replace: args.run.replace,
    };
    let launched = json_failure(global.json, &paths.key, launch::start(&dirs, &paths, &req))?;
    print(&instance, &paths.key, &launched, global.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `start --json` when the start failed: what a script needs on stdout, the same exit code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureView<'a> {
    /// Always `failed`.
    outcome: &'static str,
    key: &'a str,
    /// The reason in one line.
    error: String,
    /// Everything the text output says.
    message: String,
    /// The exit code of this command.
    exit_code: u8,
    /// The log, its last lines and the foreground command, when the start got that far.
    log_path: Option<PathBuf>,
    last_log_lines: Vec<String>,
    foreground_command: Option<String>,
}

/// With `--json`, prints a failed start as one JSON object on stdout (the error still goes
/// to stderr and decides the exit code), so scripts never get an empty stdout.
pub(crate) fn json_failure<T, E: Into<anyhow::Error>>(
    json: bool,
    key: &str,
    result: std::result::Result<T, E>,
) -> Result<T> {
    let result = result.map_err(Into::into);
    let Err(e) = &result else { return result };
    if !json {
        return result;
    }
    let start = crate::failure::start_failure(e);
    let view = FailureView {
        outcome: "failed",
        key,
        error: start.map_or_else(|| format!("{e:#}"), |f| f.what().to_string()),
        message: format!("{e:#}"),
        exit_code: crate::failure::exit_code(e),
        log_path: start.map(|f| f.log_path().to_path_buf()),
        last_log_lines: start.map(launch::StartFailure::last_lines).unwrap_or_default(),
        foreground_command: start.map(launch::StartFailure::foreground_command),
    };
    // Failing to print must not hide the start's own error.
    let _ = Out::new().json(&view);
    result
}

/// Prints a launch: notes to stderr, the result to stdout.
pub(super) fn print(instance: &Instance, key: &str, l: &Launched, json: bool) -> Result<()> {
    let mut out = Out::new();
    if json {
        return out.json(&LaunchView::of(key, l));
    }
    for n in &l.notes {
        note(format_args!("note: {n}"));
    }
    let name = l.name.as_deref().unwrap_or("?");
    match (&l.outcome, l.pid) {
        (Outcome::Reused, Some(pid)) => writeln!(
            out,
            "{instance} is already running: worker {name}, pid {pid} (supervisor {}); reused",
            l.supervisor_pid
        ),
        (Outcome::Started, Some(pid)) => {
            writeln!(
                out,
                "started {instance}: worker {name}, pid {pid} (supervisor {}), registered with {} in {}",
                l.supervisor_pid,
                l.meta.url(),
                took(l.took)
            )?;
            writeln!(out, "  log: {}", l.meta.log_path.display())
        }
        (_, None) => {
            writeln!(
                out,
                "started {instance}'s supervisor (pid {}); not waiting for the registration",
                l.supervisor_pid
            )?;
            writeln!(out, "  log: {}", l.meta.log_path.display())
        }
    }
}
