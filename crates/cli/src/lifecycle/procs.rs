//! Reading `/proc`: a process's state, parent, group, session and start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks after boot, so a reused pid never matches), its argv and
//! its user, the boot id and uptimes. Read-only. Never a process's environment
//! (`/proc/<pid>/environ`): workers may be non-dumpable, which makes it unreadable, so
//! nothing may depend on it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` the lifecycle needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Process id.
    pub(crate) pid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub(crate) state: u8,
    /// Parent pid.
    pub(crate) ppid: i32,
    /// Process group.
    pub(crate) pgid: i32,
    /// Session.
    pub(crate) sid: i32,
    /// Start time in clock ticks after boot.
    pub(crate) start_ticks: u64,
}

impl Stat {
    /// Dead, waiting to be reaped (or being reaped).
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// A process as recorded in state files: a pid is only ever trusted with its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProcId {
    /// Process id.
    pub(crate) pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub(crate) start_ticks: u64,
}

impl ProcId {
    /// This process.
    pub(crate) fn current() -> Option<Self> {
        let pid = i32::try_from(std::process::id()).ok()?;
        stat(pid).map(|s| Self { pid, start_ticks: s.start_ticks })
    }

    /// `pid` as it is now, if it runs.
    pub(crate) fn of(pid: i32) -> Option<Self> {
        stat(pid).map(|s| Self { pid, start_ticks: s.start_ticks })
    }

    /// True when the very process recorded still runs (same start time, not a zombie) and,
    /// if `parent` is given, is that process's child.
    pub(crate) fn is_alive(&self, parent: Option<i32>) -> bool {
        stat(self.pid).is_some_and(|s| {
            s.start_ticks == self.start_ticks && !s.is_zombie() && parent.is_none_or(|p| s.ppid == p)
        })
    }

    /// How long it has been running.
    pub(crate) fn uptime(&self) -> Option<Duration> {
        let hz = ticks_per_second();
        let since_boot = Duration::from_secs_f64(self.start_ticks as f64 / hz as f64);
        system_uptime()?.checked_sub(since_boot)
    }
}

/// Parses `/proc/<pid>/stat`; the command name may hold spaces and parentheses, so
/// fields are counted after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        pid,
        state: *rest.first()?.as_bytes().first()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgid: rest.get(2)?.parse().ok()?,
        sid: rest.get(3)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`, if the process exists.
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process in `/proc` (those that vanish while listing are skipped).
pub(crate) fn all() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter_map(stat).collect()
}

/// The children of `parent` (zombies included).
pub(crate) fn children_of(parent: i32) -> Vec<Stat> {
    all().into_iter().filter(|s| s.ppid == parent).collect()
}

/// A process's argv (empty for kernel threads; `None` if it is gone or not ours).
pub(crate) fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect(),
    )
}

/// The real uid a process runs as (`Uid:` in `/proc/<pid>/status`, readable for every
/// process). Not the owner of `/proc/<pid>`: that turns to root for a non-dumpable process.
pub(crate) fn uid(pid: i32) -> Option<u32> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

/// The processes holding an `flock` on `path`, from `/proc/locks` (readable by everyone,
/// unlike a non-dumpable process's fds): lines `N: FLOCK ADVISORY WRITE PID MM:mm:INODE …`
/// with the device numbers in hex; waiters (`->`) are not holders. Empty when nothing
/// holds it or the file does not exist.
pub(crate) fn flock_holders(path: &std::path::Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return Vec::new() };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return Vec::new() };
    let dev = meta.dev();
    let want = format!("{:02x}:{:02x}:{}", rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino());
    locks
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// True when `pid` runs as this process's user.
pub(crate) fn is_ours(pid: i32) -> bool {
    uid(pid) == Some(rustix::process::getuid().as_raw())
}

/// This boot's id: state recorded under another boot describes processes that are gone.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// Seconds since boot (`/proc/uptime`).
pub(crate) fn system_uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_names() {
        let line =
            "4242 (my (odd) name) S 17 4240 4239 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, Stat { pid: 4242, state: b'S', ppid: 17, pgid: 4240, sid: 4239, start_ticks: 987_654 });
        assert!(parse_stat("nonsense").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcId::current().unwrap();
        assert!(me.is_alive(None));
        assert!(me.uptime().is_some());
        assert!(!ProcId { start_ticks: me.start_ticks + 1, ..me }.is_alive(None));
        assert!(!me.is_alive(Some(me.pid)), "not its own child");
        assert!(!cmdline(me.pid).unwrap().is_empty());
        assert!(boot_id().is_some());
        assert!(is_ours(me.pid));
        assert_eq!(uid(0), None);
    }

    #[test]
    fn the_holder_of_an_flock_is_found_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let file = std::fs::File::create(&path).unwrap();
        assert!(flock_holders(&path).is_empty());
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(flock_holders(&path), vec![i32::try_from(std::process::id()).unwrap()]);
        drop(file);
        assert!(flock_holders(&path).is_empty());
        assert!(flock_holders(&dir.path().join("missing")).is_empty());
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
                        if code.contains("environ\"") || code.contains("/environ") {
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
