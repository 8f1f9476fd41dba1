//! Stopping a background worker (`stop`, `restart`, `multi stop`): over its control port
//! (warm → soft at the drain timeout → hard after the grace), else TERM then KILL to the
//! verified worker, then to the supervisor and its children's groups. Every phase is
//! bounded; nothing is signalled unless verified as ours at that moment.

use super::control::{self, ControlError};
use super::files;
use super::identity::{self, Alive, Liveness};
use super::locks;
use super::paths::{Dirs, InstancePaths};
use super::procs::{self, ProcId};
use super::state::{self, Phase};
use crate::error::{Error, IoContext, Result};
use crate::saved::{Saved, parse_bind};
use chrono::Utc;
use rota_worker::ShutdownMode;
use rustix::process::{Pid, Signal};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long one control-port request may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// The worker's kill grace (TERM → KILL of a step group) plus its after-kill margin.
const SOFT_WAIT: Duration = Duration::from_secs(10);
/// A hard shutdown KILLs at once; then results are flushed and the worker unregisters.
const HARD_WAIT: Duration = Duration::from_secs(10);
/// TERM → KILL of a worker whose control port does not answer.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(5);
/// TERM → KILL of the background server (it has no control port; TERM is its graceful stop).
const SERVER_GRACE: Duration = Duration::from_secs(20);
/// How long the supervisor may take to notice its worker is gone and exit.
const SUPERVISOR_WAIT: Duration = Duration::from_secs(5);
/// TERM → KILL of a supervisor that does not exit.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(2);

/// How a stop went.
#[derive(Clone, Debug)]
pub enum Stopped {
    /// Nothing was running; `failed` says whether the state was `failed`.
    NotRunning {
        /// The failure recorded, if the worker had failed.
        failed: Option<String>,
    },
    /// It was running and is gone now.
    Stopped {
        /// The supervisor's pid.
        supervisor_pid: i32,
        /// The worker's pid, if one ran.
        worker_pid: Option<i32>,
        /// What ended it: `control port (warm)`, `signals`, ...
        how: String,
        /// How long it took.
        took: Duration,
    },
}

/// Stops the worker of `paths` under its lifecycle lock.
pub fn stop(
    dirs: &Dirs,
    paths: &InstancePaths,
    meta: &Saved,
    mode: ShutdownMode,
    drain: Option<Duration>,
) -> Result<Stopped> {
    dirs.ensure()?;
    let _lifecycle = locks::lock(&paths.lifecycle_lock)?;
    stop_locked(paths, meta, mode, drain)
}

/// [`stop`] for a caller that holds the lifecycle lock.
pub fn stop_locked(
    paths: &InstancePaths,
    meta: &Saved,
    mode: ShutdownMode,
    drain: Option<Duration>,
) -> Result<Stopped> {
    let began = Instant::now();
    let probe = identity::probe_settled(paths, Duration::from_secs(3))?;
    let alive = match probe.liveness {
        Liveness::Alive(a) => a,
        Liveness::Unverified => {
            return Err(Error::State(format!(
                "{} holds {}, but it is not the supervisor recorded in {}; nothing was signalled",
                paths.instance,
                paths.instance_lock.display(),
                paths.state.display()
            )));
        }
        Liveness::Dead => {
            let st = probe.state.unwrap_or_default();
            if let Some(pid) = stop_orphan(paths, meta, &st) {
                state::update(paths, |s| {
                    s.stopped_by_user = true;
                    s.phase = Phase::Stopped;
                    s.supervisor = None;
                    s.worker = None;
                    s.stopped_at = Some(Utc::now());
                })?;
                files::remove_pidfile_of(&meta.pidfile, st.supervisor.map_or(0, |s| s.pid));
                return Ok(Stopped::Stopped {
                    supervisor_pid: st.supervisor.map_or(0, |s| s.pid),
                    worker_pid: Some(pid),
                    how: "its supervisor had died; stopped the worker it left running".into(),
                    took: began.elapsed(),
                });
            }
            if let Ok(Some(Ok(pid))) = files::read_pidfile(&meta.pidfile)
                && st.supervisor.is_none_or(|s| s.pid == pid)
            {
                let _ = std::fs::remove_file(&meta.pidfile);
            }
            let failed = (st.phase == Phase::Failed).then(|| st.failed_reason.clone().unwrap_or_default());
            state::update(paths, |s| {
                s.stopped_by_user = true;
                if s.phase != Phase::Failed {
                    s.phase = Phase::Stopped;
                }
                s.supervisor = None;
                s.worker = None;
            })?;
            return Ok(Stopped::NotRunning { failed });
        }
    };
    let (st, _) = state::update(paths, |s| {
        s.stopped_by_user = true;
        s.stopped_at = Some(Utc::now());
    })?;
    let how = match alive.worker {
        None => {
            end_supervisor(paths, &alive)?;
            "supervisor stopped (no worker was running)".to_string()
        }
        Some(worker) => stop_worker(paths, meta, &alive, worker, st.port, mode, drain)?,
    };
    files::remove_pidfile_of(&meta.pidfile, alive.supervisor.pid);
    state::update(paths, |s| {
        if s.phase != Phase::Failed {
            s.phase = Phase::Stopped;
        }
        s.worker = None;
        s.port = None;
    })?;
    Ok(Stopped::Stopped {
        supervisor_pid: alive.supervisor.pid,
        worker_pid: alive.worker.map(|w| w.pid),
        how,
        took: began.elapsed(),
    })
}

fn stop_worker(
    paths: &InstancePaths,
    meta: &Saved,
    alive: &Alive,
    worker: ProcId,
    port: Option<u16>,
    mode: ShutdownMode,
    drain: Option<Duration>,
) -> Result<String> {
    let secret = std::fs::read_to_string(&paths.secret).ok().map(|s| s.trim().to_string());
    let addr = port.and_then(|p| parse_bind(&meta.bind).ok().map(|b| SocketAddr::new(b.ip(), p)));
    let gone = || !supervisor_alive(paths, alive);
    let grace = if meta.is_server() { SERVER_GRACE } else { SIGNAL_GRACE };
    if let (Some(addr), Some(secret), false) = (addr, secret, meta.is_server()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .doing(|| "cannot start an async runtime".into())?;
        let drain = drain.unwrap_or_else(|| meta.drain_timeout());
        let mut phases = vec![
            (ShutdownMode::Warm, drain),
            (ShutdownMode::Soft, SOFT_WAIT),
            (ShutdownMode::Hard, HARD_WAIT),
        ];
        phases.retain(|(m, _)| *m >= mode);
        let mut answered = Vec::new();
        for (m, wait) in phases {
            match runtime.block_on(control::request_shutdown(addr, &secret, m, CONTROL_TIMEOUT)) {
                Ok(()) => answered.push(m.to_string()),
                Err(e @ (ControlError::Unreachable(_) | ControlError::Rejected(_))) => {
                    tracing::warn!("control port {addr}: {e}; using signals");
                    break;
                }
            }
            if wait_until(gone, wait) {
                return Ok(format!("control port ({})", answered.join(" → ")));
            }
        }
    }
    // The control port did not answer (or did not end it): signals, to verified processes.
    if worker.is_alive(Some(alive.supervisor.pid)) {
        signal(worker.pid, Signal::TERM);
        if !wait_until(|| !worker.is_alive(Some(alive.supervisor.pid)), grace)
            && worker.is_alive(Some(alive.supervisor.pid))
        {
            signal(worker.pid, Signal::KILL);
        }
    }
    if wait_until(gone, SUPERVISOR_WAIT) {
        let what = if meta.is_server() {
            "SIGTERM to the server"
        } else {
            "signals (TERM, then KILL) to the worker"
        };
        return Ok(what.into());
    }
    end_supervisor(paths, alive)?;
    Ok("signals to the worker and its supervisor".into())
}

/// A worker left running by a supervisor that died (killed, crashed). It is provably ours
/// only as the very process its supervisor recorded: same boot, pid and start time, our
/// user, and no supervisor holds the instance lock (a live one would claim it). Never by
/// its environment, which a non-dumpable worker hides. Asks it for a soft shutdown on its
/// control port, else TERM, then KILL. Returns its pid if there was one.
pub fn stop_orphan(paths: &InstancePaths, meta: &Saved, st: &state::RuntimeState) -> Option<i32> {
    let worker = orphan(paths, st)?;
    tracing::warn!(pid = worker.pid, "stopping a worker whose supervisor died");
    let secret = std::fs::read_to_string(&paths.secret).ok().map(|s| s.trim().to_string());
    let addr = st.port.and_then(|p| parse_bind(&meta.bind).ok().map(|b| SocketAddr::new(b.ip(), p)));
    let gone = || !worker.is_alive(None);
    if let (Some(addr), Some(secret)) = (addr, secret)
        && let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
        && runtime
            .block_on(control::request_shutdown(addr, &secret, ShutdownMode::Soft, CONTROL_TIMEOUT))
            .is_ok()
        && wait_until(gone, SOFT_WAIT)
    {
        return Some(worker.pid);
    }
    if worker.is_alive(None) {
        signal(worker.pid, Signal::TERM);
    }
    if !wait_until(gone, SIGNAL_GRACE) && worker.is_alive(None) {
        signal(worker.pid, Signal::KILL);
        wait_until(gone, SIGNAL_GRACE);
    }
    Some(worker.pid)
}

/// The worker `st` records, if it is provably ours and no supervisor claims it.
pub fn orphan(paths: &InstancePaths, st: &state::RuntimeState) -> Option<ProcId> {
    let worker = st.worker?;
    let same_boot = st.boot_id.is_none() || st.boot_id == procs::boot_id();
    let unclaimed = !locks::is_held(&paths.instance_lock).unwrap_or(true);
    (same_boot && unclaimed && worker.is_alive(None) && procs::is_ours(worker.pid)).then_some(worker)
}

/// Ends a verified supervisor: the process groups of its children (verified as its
/// children), then TERM, then KILL; waits until its instance lock is free.
pub fn end_supervisor(paths: &InstancePaths, alive: &Alive) -> Result<()> {
    let sup = alive.supervisor;
    if sup.is_alive(None) {
        signal(sup.pid, Signal::TERM);
    }
    if wait_until(|| !supervisor_alive(paths, alive), SUPERVISOR_WAIT) {
        return Ok(());
    }
    // Still there: whatever it supervises goes first, then the supervisor itself.
    if sup.is_alive(None) {
        let sup_pgid = procs::stat(sup.pid).map(|s| s.pgid);
        for child in procs::children_of(sup.pid).into_iter().filter(|c| !c.is_zombie()) {
            if child.pgid > 1 && Some(child.pgid) != sup_pgid {
                if let Some(g) = Pid::from_raw(child.pgid) {
                    let _ = rustix::process::kill_process_group(g, Signal::KILL);
                }
            } else {
                signal(child.pid, Signal::KILL);
            }
        }
        signal(sup.pid, Signal::TERM);
    }
    if !wait_until(|| !supervisor_alive(paths, alive), SUPERVISOR_GRACE) && sup.is_alive(None) {
        signal(sup.pid, Signal::KILL);
    }
    if !wait_until(|| !locks::is_held(&paths.instance_lock).unwrap_or(true), SUPERVISOR_GRACE) {
        return Err(Error::State(format!(
            "the supervisor (pid {}) of {} does not go away",
            sup.pid, paths.instance
        )));
    }
    Ok(())
}

fn supervisor_alive(paths: &InstancePaths, alive: &Alive) -> bool {
    alive.supervisor.is_alive(None) && locks::is_held(&paths.instance_lock).unwrap_or(true)
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Polls `done` until it is true (→ true) or `bound` passes (→ false).
fn wait_until(mut done: impl FnMut() -> bool, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bound_for_an_unanswering_control_port_is_16s() {
        // README and `rota worker stop --help`: at most 16 s when the port does not answer.
        let bound = CONTROL_TIMEOUT + SIGNAL_GRACE + SUPERVISOR_WAIT + SUPERVISOR_GRACE * 2;
        assert_eq!(bound, Duration::from_secs(16));
    }
}
