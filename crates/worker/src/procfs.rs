//! Reading `/proc`: a process's state, process group and start time (field 22 of
//! `/proc/<pid>/stat`, in clock ticks since boot), group membership and resident memory.
//! Read-only: it never signals anything.

use std::io::{self, Read};

/// The fields of `/proc/<pid>/stat` the worker needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Process id.
    pub(crate) pid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub(crate) state: u8,
    /// Parent process id.
    pub(crate) ppid: i32,
    /// Process group id.
    pub(crate) pgid: i32,
    /// Start time in clock ticks after boot.
    pub(crate) start_ticks: u64,
}

impl ProcStat {
    /// True for a zombie: dead, waiting to be reaped; it cannot run or be killed.
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    // After ")": field 3 (state) is index 0, field 4 (ppid) index 1, field 5 (pgrp) index 2,
    // field 22 (starttime) index 19.
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = *rest.next()?.as_bytes().first()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let start_ticks = rest.nth(16)?.parse().ok()?;
    Some(ProcStat { pid, state, ppid, pgid, start_ticks })
}

/// Reads `/proc/<pid>/stat`: one open and (almost always) one read into a stack buffer, as
/// the worker does this for every step it spawns.
pub(crate) fn read_stat(pid: i32) -> io::Result<ProcStat> {
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

/// Every process currently listed in `/proc` (processes that vanish while listing are
/// skipped).
pub(crate) fn all_processes() -> io::Result<Vec<ProcStat>> {
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
pub(crate) fn live_group_members(pgid: i32) -> Vec<ProcStat> {
    all_processes().unwrap_or_default().into_iter().filter(|p| p.pgid == pgid && !p.is_zombie()).collect()
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); `None` when the
/// process is gone or has no memory (kernel thread, zombie).
pub(crate) fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "4242 (my (odd) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, ProcStat { pid: 4242, state: b'S', ppid: 1, pgid: 4240, start_ticks: 987_654 });
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(!me.is_zombie());
        assert!(me.start_ticks > 0);
        assert!(rss_bytes(me.pid).unwrap() > 0);
    }
}
