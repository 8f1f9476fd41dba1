//! `rota worker stop` and `restart`: stop the background worker (warm → soft → hard over
//! its control port, signals if that does not answer) with its saved settings; `restart`
//! then starts it again through the same path as `start`. Stopping nothing exits 0.

use super::start::print as print_launch;
use super::took;
use crate::args::{GlobalArgs, RestartArgs, StopArgs};
use crate::output::{Out, note};
use anyhow::Result;
use rota_lifecycle::halt::{self, Stopped};
use rota_lifecycle::launch::{self, StartRequest};
use rota_lifecycle::locks;
use rota_lifecycle::paths::{Dirs, Instance, InstancePaths};
use rota_lifecycle::saved;
use serde_json::json;
use std::process::ExitCode;

pub(super) fn stop(global: &GlobalArgs, args: &StopArgs) -> Result<ExitCode> {
    let instance = Instance::profile(args.profile.profile.as_deref())?;
    let dirs = Dirs::from_env()?;
    let paths = dirs.instance(&instance);
    let stopped = stop_instance(&dirs, &paths, args.mode.mode, args.mode.drain_timeout)?;
    print(&instance, &stopped, global.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Stops one worker with its saved settings (a worker never started is "not running").
pub(super) fn stop_instance(
    dirs: &Dirs,
    paths: &InstancePaths,
    mode: rota_worker::ShutdownMode,
    drain: Option<std::time::Duration>,
) -> Result<Stopped> {
    let mut notes = Vec::new();
    let meta = saved::load(paths, &mut notes)?;
    for n in notes {
        note(format_args!("note: {n}"));
    }
    let meta = meta.unwrap_or_else(|| rota_lifecycle::saved::Saved::fresh(paths, String::new()));
    Ok(halt::stop(dirs, paths, &meta, mode, drain)?)
}

/// Prints a stop.
pub(super) fn print(instance: &Instance, s: &Stopped, json: bool) -> Result<()> {
    let mut out = Out::new();
    match s {
        Stopped::NotRunning { failed } => {
            if json {
                return out.json(&json!({"outcome": "not_running", "failed": failed}));
            }
            match failed {
                Some(why) => writeln!(out, "{instance} is not running (it had failed: {why})"),
                None => writeln!(out, "{instance} is not running; nothing to stop"),
            }
        }
        Stopped::Stopped { supervisor_pid, worker_pid, how, took: t } => {
            if json {
                return out.json(&json!({
                    "outcome": "stopped",
                    "supervisorPid": supervisor_pid,
                    "pid": worker_pid,
                    "how": how,
                    "tookMs": u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
                }));
            }
            let pid = worker_pid.map(|p| format!("worker pid {p}, ")).unwrap_or_default();
            writeln!(out, "stopped {instance} ({pid}supervisor {supervisor_pid}) in {} via {how}", took(*t))
        }
    }
}

pub(super) fn restart(global: &GlobalArgs, args: &RestartArgs) -> Result<ExitCode> {
    let instance = Instance::profile(args.profile.profile.as_deref())?;
    let dirs = Dirs::from_env()?;
    let paths = dirs.instance(&instance);
    dirs.ensure()?;
    let _lifecycle = locks::lock(&paths.lifecycle_lock)?;
    let mut notes = Vec::new();
    let Some(meta) = saved::load(&paths, &mut notes)? else {
        return Err(launch::nothing_saved(&paths).into());
    };
    let stopped = halt::stop_locked(&paths, &meta, args.mode.mode, args.mode.drain_timeout)?;
    if !global.json {
        print(&instance, &stopped, false)?;
    }
    let req = StartRequest {
        default_server: meta.url(),
        wait: (!args.wait.no_wait).then_some(args.wait.wait_timeout),
        ..StartRequest::default()
    };
    let launched = super::start::json_failure(global.json, &paths.key, launch::start_locked(&paths, &req))?;
    print_launch(&instance, &paths.key, &launched, global.json)?;
    Ok(ExitCode::SUCCESS)
}
