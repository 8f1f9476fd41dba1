//! The lifecycle's view of processes: [`ProcId`] (a pid trusted only with its start time,
//! so a reused pid never matches) over the one `/proc` reader, `rota_worker::procfs`.
//! Read-only. Never a process's environment (`/proc/<pid>/environ`, `procfs::environ`):
//! workers may be non-dumpable, which makes it unreadable, so nothing may depend on it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use rota_worker::procfs::{
    ProcStat as Stat, boot_id, children_of, cmdline, flock_holders, is_ours, stat, system_uptime,
};

/// A process as recorded in state files: a pid is only ever trusted with its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcId {
    /// Process id.
    pub pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

impl ProcId {
    /// This process.
    pub fn current() -> Option<Self> {
        let pid = i32::try_from(std::process::id()).ok()?;
        stat(pid).map(|s| Self { pid, start_ticks: s.start_ticks })
    }

    /// `pid` as it is now, if it runs.
    pub fn of(pid: i32) -> Option<Self> {
        stat(pid).map(|s| Self { pid, start_ticks: s.start_ticks })
    }

    /// True when the very process recorded still runs (same start time, not a zombie) and,
    /// if `parent` is given, is that process's child.
    pub fn is_alive(&self, parent: Option<i32>) -> bool {
        stat(self.pid).is_some_and(|s| {
            s.start_ticks == self.start_ticks && !s.is_zombie() && parent.is_none_or(|p| s.ppid == p)
        })
    }

    /// How long it has been running.
    pub fn uptime(&self) -> Option<Duration> {
        let hz = ticks_per_second();
        let since_boot = Duration::from_secs_f64(self.start_ticks as f64 / hz as f64);
        system_uptime()?.checked_sub(since_boot)
    }
}

fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcId::current().unwrap();
        assert!(me.is_alive(None));
        assert!(me.uptime().is_some());
        assert!(!ProcId { start_ticks: me.start_ticks + 1, ..me }.is_alive(None));
        assert!(!me.is_alive(Some(me.pid)), "not its own child");
    }

    /// Ownership checks (`stop`, `diagnose`, `healthcheck`, `start`) rest on flocks, pids,
    /// start times and `/proc/<pid>/{stat,status,cmdline}`. A hardened (non-dumpable)
    /// worker's `/proc/<pid>/environ` cannot be read, so no code of this crate may read it.
    #[test]
    fn no_code_reads_a_process_environment() {
        fn scan(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    scan(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
                    for (n, line) in body.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or_default();
                        if code.contains("environ\"")
                            || code.contains("/environ")
                            || code.contains("environ(")
                        {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        scan(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(found.is_empty(), "reads of /proc/<pid>/environ:\n{}", found.join("\n"));
    }
}
