//! Is a background worker alive? Only when its instance lock is held **and** the state
//! names a supervisor of this boot whose pid, start time and non-zombie state check out
//! in `/proc`; its worker counts only as that supervisor's child with the recorded start
//! time. A pid file alone, or a pid that answers `kill -0`, proves nothing.

use super::files::Loaded;
use super::locks;
use super::paths::InstancePaths;
use super::procs::{self, ProcId};
use super::state::{self, RuntimeState};
use crate::error::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A verified, live supervisor.
#[derive(Clone, Debug)]
pub struct Alive {
    /// The supervisor.
    pub supervisor: ProcId,
    /// Its worker, if one runs (verified as the supervisor's child).
    pub worker: Option<ProcId>,
}

/// What a probe found.
#[derive(Clone, Debug)]
pub enum Liveness {
    /// Alive and verified: these processes are provably ours.
    Alive(Alive),
    /// The instance lock is held, but not by the process the state names (a supervisor
    /// still starting, or a state file that was lost): nothing may be signalled.
    Unverified,
    /// Nothing holds the instance lock: no supervisor runs.
    Dead,
}

/// A probe of one worker: liveness, the state file, and what was wrong with it.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Alive, unverified or dead.
    pub liveness: Liveness,
    /// The runtime state, if it could be read.
    pub state: Option<RuntimeState>,
    /// A corrupt state file moved aside: (where, why).
    pub quarantined: Option<(PathBuf, String)>,
}

impl Probe {
    /// The verified processes, if alive.
    pub fn alive(&self) -> Option<&Alive> {
        match &self.liveness {
            Liveness::Alive(a) => Some(a),
            _ => None,
        }
    }
}

/// Probes once.
pub fn probe(paths: &InstancePaths) -> Result<Probe> {
    let held = locks::is_held(&paths.instance_lock)?;
    let (state, quarantined) = match state::load(paths)? {
        Loaded::Found(s) => (Some(s), None),
        Loaded::Missing => (None, None),
        Loaded::Quarantined { to, why } => (None, Some((to, why))),
    };
    let liveness = if !held {
        Liveness::Dead
    } else {
        match state.as_ref().and_then(verify) {
            Some(alive) => Liveness::Alive(alive),
            None => Liveness::Unverified,
        }
    };
    Ok(Probe { liveness, state, quarantined })
}

/// Probes until the result is not `Unverified` or `patience` is spent (a supervisor
/// takes its lock a moment before it writes its state).
pub fn probe_settled(paths: &InstancePaths, patience: Duration) -> Result<Probe> {
    let deadline = Instant::now() + patience;
    loop {
        let p = probe(paths)?;
        if !matches!(p.liveness, Liveness::Unverified) || Instant::now() >= deadline {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The verified processes a state names, if they are this boot's and still the same.
fn verify(state: &RuntimeState) -> Option<Alive> {
    let supervisor = state.supervisor?;
    if state.boot_id.is_some() && state.boot_id != procs::boot_id() {
        return None;
    }
    if !supervisor.is_alive(None) {
        return None;
    }
    let worker = state.worker.filter(|w| w.is_alive(Some(supervisor.pid)));
    Some(Alive { supervisor, worker })
}

/// What a pid file found at start or stop names, for the message about cleaning it up.
pub fn describe_stale_pid(pid: i32) -> String {
    match procs::stat(pid) {
        None => format!("pid {pid} is not running"),
        Some(s) if s.is_zombie() => format!("pid {pid} is a zombie"),
        Some(_) => {
            let argv = procs::cmdline(pid).unwrap_or_default().join(" ");
            let argv: String = argv.chars().take(60).collect();
            format!("pid {pid} is another process ({argv}), left alone")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{Dirs, Instance};
    use crate::state::update;

    #[test]
    fn only_a_held_lock_with_a_matching_process_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs { state: dir.path().join("s"), run: dir.path().join("r") };
        dirs.ensure().unwrap();
        let p = dirs.instance(&Instance::profile(None).unwrap());
        let me = ProcId::current().unwrap();
        update(&p, |s| {
            s.supervisor = Some(me);
            s.boot_id = procs::boot_id();
        })
        .unwrap();
        // The state names a live process, but nothing holds the lock: dead.
        assert!(matches!(probe(&p).unwrap().liveness, Liveness::Dead));
        let _held = locks::try_lock(&p.instance_lock).unwrap().unwrap();
        assert!(matches!(probe(&p).unwrap().liveness, Liveness::Alive(_)));
        // A recorded start time that does not match (a reused pid): unverified.
        update(&p, |s| s.supervisor = Some(ProcId { start_ticks: me.start_ticks + 7, ..me })).unwrap();
        assert!(matches!(probe(&p).unwrap().liveness, Liveness::Unverified));
        update(&p, |s| {
            s.supervisor = Some(me);
            s.boot_id = Some("another-boot".into());
        })
        .unwrap();
        assert!(matches!(probe(&p).unwrap().liveness, Liveness::Unverified));
    }
}
