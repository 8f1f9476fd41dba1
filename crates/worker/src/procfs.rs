//! The one `/proc` reader of the workspace (worker, CLI lifecycle, bench, test kit): a
//! process's `stat` fields (state, parent, group, session, CPU times, start time), argv,
//! user and resident memory, its children and group members, the boot id and uptime.
//! Read-only: it never signals anything.

use std::io::{self, Read};
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` rota uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// CPU time in user mode, in clock ticks (field 14).
    pub utime: u64,
    /// CPU time in kernel mode, in clock ticks (field 15).
    pub stime: u64,
    /// User CPU time of the children it waited for, in clock ticks (field 16).
    pub cutime: u64,
    /// Kernel CPU time of the children it waited for, in clock ticks (field 17).
    pub cstime: u64,
    /// Start time in clock ticks after boot (field 22): with the pid, it names one process,
    /// as a reused pid never has the same start time.
    pub start_ticks: u64,
}

impl ProcStat {
    /// True for a zombie: dead, waiting to be reaped; it cannot run or be killed.
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = *rest.next()?.as_bytes().first()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let sid = rest.next()?.parse().ok()?;
    // The children's times are signed in the kernel's format; never negative in practice.
    let mut ticks = |skip: usize| rest.nth(skip)?.parse::<i64>().ok().map(|t| t.max(0).unsigned_abs());
    let utime = ticks(7)?;
    let stime = ticks(0)?;
    let cutime = ticks(0)?;
    let cstime = ticks(0)?;
    let start_ticks = ticks(4)?;
    Some(ProcStat { pid, state, ppid, pgid, sid, utime, stime, cutime, cstime, start_ticks })
}

/// Reads `/proc/<pid>/stat`: one open and (almost always) one read into a stack buffer, as
/// the worker does this for every step it spawns.
pub fn read_stat(pid: i32) -> io::Result<ProcStat> {
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    // The kernel hands out the whole line at once; it ends with a newline.
    while len < buf.len() && (len == 0 || buf[len - 1] != b'\n') {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // The command name is not necessarily UTF-8; only the numbers after it matter.
    parse_stat(&String::from_utf8_lossy(&buf[..len]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unparsable /proc/{pid}/stat")))
}

/// `/proc/<pid>/stat`, if the process exists (`None` for pids that cannot name one).
pub fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    read_stat(pid).ok()
}

/// True if the process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_zombie())
}

/// Every process currently listed in `/proc` (processes that vanish while listing are
/// skipped).
pub fn all_processes() -> io::Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if let Ok(stat) = read_stat(pid) {
            out.push(stat);
        }
    }
    Ok(out)
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<ProcStat> {
    all_processes().unwrap_or_default().into_iter().filter(|p| p.pgid == pgid && !p.is_zombie()).collect()
}

/// The children of `parent` (zombies included).
pub fn children_of(parent: i32) -> Vec<ProcStat> {
    all_processes().unwrap_or_default().into_iter().filter(|s| s.ppid == parent).collect()
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); `None` when the
/// process is gone or has no memory (kernel thread, zombie).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let kib: u64 = status_field(pid, "VmRSS:")?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory of `pid` that no other process maps from the same file, in bytes: `RssAnon` plus
/// `RssShmem` of `/proc/<pid>/status` (its heap, stacks, private data), without `RssFile`
/// (pages of its executable and libraries, shared with every process of the same binary).
/// What a helper process adds to its parent's `VmRSS` when both run the same executable.
pub fn private_rss_bytes(pid: i32) -> Option<u64> {
    let kib =
        |field: &str| -> Option<u64> { status_field(pid, field)?.split_whitespace().next()?.parse().ok() };
    Some((kib("RssAnon:")? + kib("RssShmem:")?) * 1024)
}

/// The real uid a process runs as (`Uid:` in `/proc/<pid>/status`, readable for every
/// process). Not the owner of `/proc/<pid>`: that turns to root for a non-dumpable process.
pub fn uid(pid: i32) -> Option<u32> {
    status_field(pid, "Uid:")?.split_whitespace().next()?.parse().ok()
}

/// True when `pid` runs as this process's user.
pub fn is_ours(pid: i32) -> bool {
    uid(pid) == Some(rustix::process::getuid().as_raw())
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string)
}

/// A process's argv (empty for kernel threads; `None` if it is gone).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    nul_separated(pid, "cmdline")
}

/// A process's environment as `KEY=value` strings, for tests and tools that look at
/// processes of their own making. Unreadable for a non-dumpable process (a hardened
/// worker), so nothing that decides about a worker may rely on it.
pub fn environ(pid: i32) -> Option<Vec<String>> {
    nul_separated(pid, "environ")
}

/// `/proc/<pid>/<file>` split at its NULs (empty words dropped, text decoded lossily).
fn nul_separated(pid: i32, file: &str) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/{file}")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect(),
    )
}

/// This boot's id: state recorded under another boot describes processes that are gone.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// The processes holding an `flock` on `path`, from `/proc/locks` (readable by everyone,
/// unlike a non-dumpable process's fds): lines `N: FLOCK ADVISORY WRITE PID MM:mm:INODE …`
/// with the device numbers in hex; waiters (`->`) are not holders. Empty when nothing
/// holds it or the file does not exist.
pub fn flock_holders(path: &std::path::Path) -> Vec<i32> {
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

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`: 100 on every Linux
/// architecture rota runs on; the kernel fixes it for user space).
pub const TICKS_PER_SECOND: u64 = 100;

/// One process's use of the machine, for `process_*` metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub open_fds: Option<u64>,
    /// Threads (`Threads:` of `/proc/<pid>/status`).
    pub threads: Option<u64>,
}

/// This process's [`Usage`]; `None` without a readable `/proc`.
pub fn self_usage() -> Option<Usage> {
    let pid = i32::try_from(std::process::id()).ok()?;
    let st = read_stat(pid).ok()?;
    let ticks = TICKS_PER_SECOND as f64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    let boot = now - system_uptime()?.as_secs_f64();
    Some(Usage {
        cpu_seconds: (st.utime + st.stime) as f64 / ticks,
        resident_bytes: rss_bytes(pid).unwrap_or(0),
        start_time_seconds: boot + st.start_ticks as f64 / ticks,
        open_fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64),
        threads: status_field(pid, "Threads:").and_then(|t| t.trim().parse().ok()),
    })
}

/// Time since boot (`/proc/uptime`).
pub fn system_uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "4242 (my (odd) name) S 1 4240 4239 0 -1 4194560 100 0 0 0 11 12 13 14 20 0 1 0 987654 1000 \
                    100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        let want = ProcStat {
            pid: 4242,
            state: b'S',
            ppid: 1,
            pgid: 4240,
            sid: 4239,
            utime: 11,
            stime: 12,
            cutime: 13,
            cstime: 14,
            start_ticks: 987_654,
        };
        assert_eq!(s, want);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id() as i32;
        let me = read_stat(pid).unwrap();
        assert_eq!(me.pid, pid);
        assert!(!me.is_zombie() && is_alive(pid));
        assert!(me.start_ticks > 0);
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(private_rss_bytes(pid).unwrap() > 0 && private_rss_bytes(pid) <= rss_bytes(pid));
        assert!(!cmdline(pid).unwrap().is_empty());
        assert!(environ(pid).is_some());
        assert!(is_ours(pid));
        assert_eq!(uid(0), None);
        assert_eq!(stat(0), None);
        assert!(boot_id().is_some() && system_uptime().is_some());
    }
}
