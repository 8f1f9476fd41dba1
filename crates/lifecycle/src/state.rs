//! A background worker's runtime state (`<key>.state.json`, 0600): identities, phase, port,
//! restarts, last exit and error, whether a person stopped it. Every write is a
//! read-modify-write under `<key>.state.lock`, so the supervisor and `stop` never undo each
//! other. It describes; liveness is proven by the lock and `/proc` (`identity`).

use super::files::{self, FILE_VERSION, Loaded};
use super::locks;
use super::paths::InstancePaths;
use super::procs::ProcId;
use crate::error::{IoContext, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the worker is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The worker was spawned and has not registered yet.
    Starting,
    /// The worker registered.
    Running,
    /// Waiting to restart a crashed worker.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Not running, as asked (or never started).
    #[default]
    Stopped,
    /// Given up: no more restarts until `start` or `heal`.
    Failed,
}

impl Phase {
    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// Crashed or failed (restarted with backoff).
    Crash,
    /// Exited to be replaced (recycling); restarted at once.
    Recycle,
    /// Stopped on an operator's request.
    Shutdown,
    /// Refused its configuration (exit 78); never restarted.
    Config,
    /// Did not register in time and was stopped.
    NotReady,
}

/// The last exit of the worker process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
    /// When.
    pub at: DateTime<Utc>,
    /// What it meant.
    pub kind: ExitKind,
    /// How long it had run, in milliseconds.
    pub uptime_ms: u64,
}

/// The runtime state of one background worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeState {
    /// File format version.
    pub version: u64,
    /// A nonce per supervisor start.
    pub instance_id: Option<String>,
    /// The supervisor.
    pub supervisor: Option<ProcId>,
    /// The worker process, while one runs.
    pub worker: Option<ProcId>,
    /// The boot the processes above belong to.
    pub boot_id: Option<String>,
    /// Phase.
    pub phase: Phase,
    /// The worker's local control port.
    pub port: Option<u16>,
    /// The name it registered under.
    pub worker_name: Option<String>,
    /// Its session with the server.
    pub session_id: Option<String>,
    /// When the supervisor started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the current worker process started.
    pub worker_started_at: Option<DateTime<Utc>>,
    /// When it registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Restarts by this supervisor.
    pub restarts: u32,
    /// Times of unstable exits inside the restart window.
    pub unstable_exits: Vec<DateTime<Utc>>,
    /// The last exit of a worker process.
    pub last_exit: Option<LastExit>,
    /// The last error worth showing.
    pub last_error: Option<String>,
    /// Why the state is `failed`.
    pub failed_reason: Option<String>,
    /// Stopped by `rota worker stop` (heal leaves it alone).
    pub stopped_by_user: bool,
    /// When it was last stopped.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

impl Default for RuntimeState {
    fn default() -> Self {
        Self {
            version: FILE_VERSION,
            instance_id: None,
            supervisor: None,
            worker: None,
            boot_id: None,
            phase: Phase::Stopped,
            port: None,
            worker_name: None,
            session_id: None,
            started_at: None,
            worker_started_at: None,
            registered_at: None,
            restarts: 0,
            unstable_exits: Vec::new(),
            last_exit: None,
            last_error: None,
            failed_reason: None,
            stopped_by_user: false,
            stopped_at: None,
            updated_at: Utc::now(),
        }
    }
}

/// Reads the state (a corrupt file is quarantined and reported through `Loaded`).
pub fn load(paths: &InstancePaths) -> Result<Loaded<RuntimeState>> {
    files::load_json(&paths.state).doing(|| format!("cannot read {}", paths.state.display()))
}

/// Reads, changes and writes the state under the state lock; returns the new state and,
/// if the old file had to be quarantined, where it went.
pub fn update(
    paths: &InstancePaths,
    change: impl FnOnce(&mut RuntimeState),
) -> Result<(RuntimeState, Option<PathBuf>)> {
    let _lock = locks::lock(&paths.state_lock)?;
    let (mut state, quarantined) = match load(paths)? {
        Loaded::Found(s) => (s, None),
        Loaded::Missing => (RuntimeState::default(), None),
        Loaded::Quarantined { to, .. } => (RuntimeState::default(), Some(to)),
    };
    change(&mut state);
    state.version = FILE_VERSION;
    state.updated_at = Utc::now();
    files::write_json(&paths.state, &state, 0o600)
        .doing(|| format!("cannot write {}", paths.state.display()))?;
    Ok((state, quarantined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{Dirs, Instance};

    #[test]
    fn updates_are_read_modify_write() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs { state: dir.path().join("s"), run: dir.path().join("r") };
        dirs.ensure().unwrap();
        let p = dirs.instance(&Instance::profile(None).unwrap());
        update(&p, |s| s.restarts = 2).unwrap();
        let (s, q) = update(&p, |s| s.phase = Phase::Failed).unwrap();
        assert_eq!((s.restarts, s.phase, q), (2, Phase::Failed, None));
        std::fs::write(&p.state, b"{garbage").unwrap();
        let (s, q) = update(&p, |s| s.stopped_by_user = true).unwrap();
        assert_eq!(s.restarts, 0, "a corrupt state is not trusted");
        assert!(q.is_some());
        assert!(matches!(load(&p).unwrap(), Loaded::Found(s) if s.stopped_by_user));
    }
}
