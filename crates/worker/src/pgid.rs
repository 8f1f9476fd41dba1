//! Durable records of running steps' process groups: one append-only journal per spawner
//! helper of a workspace (`<workspace>/.rota/running.log`, then `running.1.log`, …:
//! `+{record}` at spawn, `-<attempt_id>` once the group is gone) and the boot-time reaping
//! of groups a previous worker left behind. It must never signal a group it cannot tie to
//! a record by pid start time.

use crate::kill;
use crate::procfs::{self, ProcStat};
use rota_domain::AttemptId;
use rustix::process::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What the worker records right after spawning a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PgidRecord {
    /// The attempt the group runs.
    pub(crate) attempt_id: AttemptId,
    /// Pid of the step's `sh`.
    pub(crate) pid: i32,
    /// Its process group (= `pid`, as steps lead their own group).
    pub(crate) pgid: i32,
    /// Field 22 of `/proc/<pid>/stat`: ties the record to this process, not a reused pid.
    pub(crate) start_ticks: u64,
}

/// The journal is rewritten with only its live records once it grows past this.
const COMPACT_AT: u64 = 4 << 20;

/// `<workspace>/.rota`: where the journal of running steps lives.
pub(crate) fn running_dir(workspace: &Path) -> PathBuf {
    workspace.join(".rota")
}

/// `<workspace>/.rota/running.log`: the journal of the first spawner helper (the only one
/// before workers had several), the one older releases read.
pub(crate) fn journal_path(workspace: &Path) -> PathBuf {
    lane_journal_path(workspace, 0)
}

/// The journal of spawner helper `lane`: `running.log` for the first, `running.<lane>.log`
/// for the others (each helper appends to its own file, so they never share a writer).
pub(crate) fn lane_journal_path(workspace: &Path, lane: usize) -> PathBuf {
    match lane {
        0 => running_dir(workspace).join("running.log"),
        n => running_dir(workspace).join(format!("running.{n}.log")),
    }
}

/// `<workspace>/.rota/steps`: the journals of spawner helpers that run as the `--run-as`
/// user (owned by that user, who may write them: see [`reap_leftovers`]).
pub(crate) fn user_journal_dir(workspace: &Path) -> PathBuf {
    running_dir(workspace).join("steps")
}

/// The journal of a `--run-as` spawner helper `lane`: `.rota/steps/running.<lane>.log`.
pub(crate) fn user_journal_path(workspace: &Path, lane: usize) -> PathBuf {
    user_journal_dir(workspace).join(format!("running.{lane}.log"))
}

/// Every journal of `workspace`: `running.log` (even when absent), each `running.<n>.log`,
/// and each `steps/running.<n>.log` (flagged: written as the `--run-as` user).
fn journal_paths(workspace: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut paths = vec![(journal_path(workspace), false)];
    for (dir, by_user) in [(running_dir(workspace), false), (user_journal_dir(workspace), true)] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let lane = name
                .to_str()
                .and_then(|n| n.strip_prefix("running.")?.strip_suffix(".log")?.parse::<usize>().ok());
            if lane.is_some_and(|n| n > 0 || by_user) {
                paths.push((dir.join(name), by_user));
            }
        }
    }
    Ok(paths)
}

/// `<workspace>/.rota/running/<attempt_id>.json`: one file per record, as workers before
/// the journal wrote them. Boot reaping still honours (and then deletes) them.
fn legacy_dir(workspace: &Path) -> PathBuf {
    running_dir(workspace).join("running")
}

fn plus_line(rec: &PgidRecord) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(96);
    line.push(b'+');
    serde_json::to_writer(&mut line, rec).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// The records of a journal that were added and never removed, by attempt, and the
/// number of lines that could not be read. A last line without its newline was torn by a
/// kill in the middle of a write (or the machine stopping) and is ignored.
fn parse_journal(body: &[u8]) -> (BTreeMap<AttemptId, PgidRecord>, usize) {
    let mut live = BTreeMap::new();
    let mut bad = 0;
    let complete = match body.iter().rposition(|b| *b == b'\n') {
        Some(end) => &body[..end],
        None => return (live, 0),
    };
    for line in complete.split(|b| *b == b'\n') {
        match line.split_first() {
            None => {}
            Some((b'+', json)) => match serde_json::from_slice::<PgidRecord>(json) {
                Ok(rec) => {
                    live.insert(rec.attempt_id, rec);
                }
                Err(_) => bad += 1,
            },
            Some((b'-', id)) => match std::str::from_utf8(id).ok().and_then(|s| s.parse::<i64>().ok()) {
                Some(id) => {
                    live.remove(&AttemptId(id));
                }
                None => bad += 1,
            },
            Some(_) => bad += 1,
        }
    }
    (live, bad)
}

/// The running steps' records of one workspace: an append-only journal on disk and the
/// live records in memory. Boot reaping ([`reap_leftovers`]) must have emptied the journal
/// before a worker appends to it.
///
/// No fsync, on purpose: the journal must outlive the *worker* (kill -9, panic), and the
/// page cache guarantees that, since a `write` is in the kernel's hands once it returns.
/// It need not outlive the *machine*: after a crash or power loss no process group of the
/// step survives to be reaped, and a stale record is harmless because reaping checks the
/// leader's start time. (Three fsyncs per step capped the worker at ~300 steps/s here.)
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Opened (O_APPEND) on first use.
    file: Option<File>,
    /// Bytes in the journal.
    size: u64,
    /// A write failed and may have left part of a line: rewrite before appending again.
    torn: bool,
    live: HashMap<AttemptId, PgidRecord>,
}

impl Inner {
    /// Appends one line with a single `write`, so a kill leaves either the whole line or a
    /// torn last line (which readers ignore). The live map already reflects the change.
    fn append(&mut self, path: &Path, line: &[u8]) -> io::Result<()> {
        if self.torn || self.size >= COMPACT_AT {
            return self.rewrite(path);
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new().create(true).append(true).open(path)?;
                self.size = f.metadata()?.len();
                self.file.insert(f)
            }
        };
        match file.write(line) {
            Ok(n) if n == line.len() => {
                self.size += n as u64;
                Ok(())
            }
            Ok(n) => {
                self.torn = true;
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write ({n} of {} bytes)", line.len()),
                ))
            }
            Err(e) => {
                self.torn = true;
                Err(e)
            }
        }
    }

    /// Replaces the journal with the live records only: temp file, then rename, so a
    /// reader sees the old journal or the new one, never a mix.
    fn rewrite(&mut self, path: &Path) -> io::Result<()> {
        let mut body = Vec::with_capacity(self.live.len() * 96);
        for rec in self.live.values() {
            body.extend(plus_line(rec)?);
        }
        let tmp = path.with_extension("log.tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new().create_new(true).append(true).open(&tmp)?;
        file.write_all(&body)?;
        fs::rename(&tmp, path)?;
        // The descriptor follows the file through the rename.
        self.file = Some(file);
        self.size = body.len() as u64;
        self.torn = false;
        Ok(())
    }
}

impl Journal {
    /// The journal at `path` (opened on first use).
    pub(crate) fn at(path: PathBuf) -> Self {
        Self { path, inner: Mutex::default() }
    }

    /// The first journal of `workspace`.
    #[cfg(test)]
    pub(crate) fn new(workspace: &Path) -> Self {
        Self::at(journal_path(workspace))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a spawned step's group (`+` line). On error nothing is recorded.
    pub(crate) fn record(&self, rec: &PgidRecord) -> io::Result<()> {
        let line = plus_line(rec)?;
        let mut j = self.lock();
        j.live.insert(rec.attempt_id, rec.clone());
        let res = j.append(&self.path, &line);
        if res.is_err() {
            j.live.remove(&rec.attempt_id);
        }
        res
    }

    /// The group of `attempt` is gone: forgets its record (`-` line; unknown is fine).
    pub(crate) fn forget(&self, attempt: AttemptId) -> io::Result<()> {
        let mut j = self.lock();
        if j.live.remove(&attempt).is_none() {
            return Ok(());
        }
        j.append(&self.path, format!("-{attempt}\n").as_bytes())
    }

    /// The live record of `attempt`, if there is one.
    #[cfg(test)]
    pub(crate) fn get(&self, attempt: AttemptId) -> Option<PgidRecord> {
        self.lock().live.get(&attempt).cloned()
    }
}

/// True when a live process can be tied to `rec`: its leader still runs with the recorded
/// start time, or a process of its group started no earlier than the leader did.
pub(crate) fn is_record_live(rec: &PgidRecord, procs: &[ProcStat]) -> bool {
    procs.iter().filter(|p| !p.is_zombie()).any(|p| {
        (p.pid == rec.pid && p.start_ticks == rec.start_ticks)
            || (p.pgid == rec.pgid && p.start_ticks >= rec.start_ticks)
    })
}

/// What boot reaping did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reaped {
    /// Groups that were still alive and got KILLed.
    pub(crate) killed: Vec<AttemptId>,
    /// Records whose processes were gone (or not provably theirs).
    pub(crate) stale: usize,
}

/// Records of the per-file layout older workers used (unreadable ones are skipped).
fn legacy_records(dir: &Path) -> io::Result<Vec<PgidRecord>> {
    let mut records = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(records),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let rec = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<PgidRecord>(&b).ok());
        match rec {
            Some(rec) => records.push(rec),
            None => {
                tracing::warn!(path = %path.display(), "unreadable process-group record: deleted without signalling")
            }
        }
    }
    Ok(records)
}

/// For every live record of the journals (and of the older per-file layout): KILL the
/// group if it can be tied to the record. Then, and only then, empty the first journal
/// (temp file + rename), delete the others and the old layout.
pub(crate) fn reap_leftovers(workspace: &Path) -> io::Result<Reaped> {
    let paths = journal_paths(workspace)?;
    let mut out = Reaped::default();
    // Each record, with the uid whose processes alone it may name: a journal the
    // `--run-as` user can write must not make a root worker kill anyone else's group.
    let mut records: Vec<(PgidRecord, Option<u32>)> = Vec::new();
    for (path, by_user) in &paths {
        let (journal, bad, owner) = match fs::read(path) {
            Ok(body) => {
                let (journal, bad) = parse_journal(&body);
                let owner = if *by_user { Some(fs::metadata(path)?.uid()) } else { None };
                (journal, bad, owner)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), 0, None),
            Err(e) => return Err(e),
        };
        if bad > 0 {
            tracing::warn!(lines = bad, path = %path.display(), "unreadable lines in the process-group journal: ignored without signalling");
        }
        records.extend(journal.into_values().map(|r| (r, owner)));
    }
    let legacy = legacy_dir(workspace);
    records.extend(legacy_records(&legacy)?.into_iter().map(|r| (r, None)));
    if !records.is_empty() {
        let procs = procfs::all_processes()?;
        for (rec, owner) in records {
            let pgid = Pid::from_raw(rec.pgid).filter(|_| rec.pgid > 1);
            let owned = |uid: u32| {
                procfs::live_group_members(rec.pgid).iter().all(|p| procfs::uid(p.pid) == Some(uid))
            };
            match pgid {
                Some(pgid) if is_record_live(&rec, &procs) && owner.is_none_or(owned) => {
                    tracing::warn!(attempt_id = %rec.attempt_id, pgid = rec.pgid,
                        "killing process group left behind by a previous worker");
                    kill::kill_group(pgid);
                    wait_members_gone(rec.pgid, Duration::from_secs(2));
                    out.killed.push(rec.attempt_id);
                }
                _ => out.stale += 1,
            }
        }
    }
    Inner::default().rewrite(&journal_path(workspace))?;
    for (path, _) in &paths[1..] {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match fs::remove_dir_all(&legacy) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(out)
}

/// Blocks (briefly) until group `pgid` has no live member.
fn wait_members_gone(pgid: i32, bound: Duration) {
    let start = Instant::now();
    while !procfs::live_group_members(pgid).is_empty() && start.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    fn workspace() -> tempfile::TempDir {
        let ws = tempfile::tempdir().unwrap();
        fs::create_dir_all(running_dir(ws.path())).unwrap();
        ws
    }

    /// Bound for things that take milliseconds on an idle machine (a fork, an exit), generous
    /// for a loaded 2-core CI machine.
    const BOUND: Duration = Duration::from_secs(20);

    fn spawn_group() -> (Child, PgidRecord) {
        let child = Command::new("sh")
            .arg("-c")
            .arg("sleep 300 & sleep 300")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start_ticks = procfs::read_stat(pid).unwrap().start_ticks;
        let deadline = Instant::now() + BOUND;
        while procfs::live_group_members(pid).len() < 2 {
            assert!(Instant::now() < deadline, "group {pid} never had its 2 processes");
            std::thread::sleep(Duration::from_millis(10));
        }
        (child, PgidRecord { attempt_id: AttemptId(pid.into()), pid, pgid: pid, start_ticks })
    }

    /// KILL is asynchronous: a killed process may still be running its exit for a moment
    /// after `kill(2)` returns (and reaping waits at most 2 s), so the group is checked
    /// until it empties, within a bound.
    fn assert_group_dies(pgid: i32) {
        let deadline = Instant::now() + BOUND;
        while !procfs::live_group_members(pgid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "processes left in the group: {:?}",
                procfs::live_group_members(pgid)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn rec(id: i64) -> PgidRecord {
        PgidRecord { attempt_id: AttemptId(id), pid: 1234, pgid: 1234, start_ticks: 99 }
    }

    #[test]
    fn the_journal_appends_one_line_per_change() {
        let ws = workspace();
        let j = Journal::new(ws.path());
        j.record(&rec(42)).unwrap();
        j.record(&rec(43)).unwrap();
        assert_eq!(j.get(AttemptId(42)), Some(rec(42)));
        j.forget(AttemptId(42)).unwrap();
        j.forget(AttemptId(42)).unwrap();
        assert_eq!(j.get(AttemptId(42)), None);
        let text = fs::read_to_string(journal_path(ws.path())).unwrap();
        assert_eq!(
            text,
            "+{\"attemptId\":42,\"pid\":1234,\"pgid\":1234,\"startTicks\":99}\n\
             +{\"attemptId\":43,\"pid\":1234,\"pgid\":1234,\"startTicks\":99}\n-42\n"
        );
        let (live, bad) = parse_journal(text.as_bytes());
        assert_eq!((live.into_values().collect::<Vec<_>>(), bad), (vec![rec(43)], 0));
    }

    #[test]
    fn a_torn_last_line_and_garbage_are_ignored() {
        let body = b"+{\"attemptId\":1,\"pid\":5,\"pgid\":5,\"startTicks\":7}\nnonsense\n-x\n\
            +{\"attemptId\":2,\"pid\":6,\"pgid\":6,\"startTicks\":8}\n-1\n+{\"attemptId\":3,\"pi";
        let (live, bad) = parse_journal(body);
        assert_eq!(live.keys().copied().collect::<Vec<_>>(), [AttemptId(2)]);
        assert_eq!(bad, 2);
        assert!(parse_journal(b"+{\"attemptId\":1,\"pid\":5,\"pgid\":5,\"startTicks\":7}").0.is_empty());
    }

    #[test]
    fn the_journal_is_compacted_to_its_live_records() {
        let ws = workspace();
        let j = Journal::new(ws.path());
        j.record(&rec(1)).unwrap();
        let size = || fs::metadata(journal_path(ws.path())).unwrap().len();
        let mut peak = 0;
        for id in 2.. {
            j.record(&rec(id)).unwrap();
            j.forget(AttemptId(id)).unwrap();
            if size() < peak {
                break;
            }
            peak = size();
        }
        assert!(peak >= COMPACT_AT - 200, "compacted too early: {peak} bytes");
        assert!(size() < 200, "not compacted: {} bytes", size());
        let (live, _) = parse_journal(&fs::read(journal_path(ws.path())).unwrap());
        assert_eq!(live.into_values().collect::<Vec<_>>(), [rec(1)]);
        assert!(!journal_path(ws.path()).with_extension("log.tmp").exists());
    }

    #[test]
    fn boot_reaping_kills_a_live_recorded_group() {
        let ws = workspace();
        let (mut child, rec) = spawn_group();
        let j = Journal::new(ws.path());
        j.record(&rec).unwrap();
        j.record(&super::tests::rec(7)).unwrap();
        j.forget(AttemptId(7)).unwrap();
        drop(j); // as if the worker had been killed
        let reaped = reap_leftovers(ws.path()).unwrap();
        assert_eq!(reaped, Reaped { killed: vec![rec.attempt_id], stale: 0 });
        let _ = child.wait();
        assert_group_dies(rec.pgid);
        assert_eq!(fs::read(journal_path(ws.path())).unwrap(), b"");
    }

    #[test]
    fn boot_reaping_reads_the_journal_of_every_helper() {
        let ws = workspace();
        let (mut first, a) = spawn_group();
        let (mut second, b) = spawn_group();
        Journal::at(lane_journal_path(ws.path(), 0)).record(&a).unwrap();
        Journal::at(lane_journal_path(ws.path(), 3)).record(&b).unwrap();
        let stray = running_dir(ws.path()).join("running.x.log");
        fs::write(&stray, b"not a journal").unwrap();
        let mut reaped = reap_leftovers(ws.path()).unwrap();
        reaped.killed.sort();
        let mut want = vec![a.attempt_id, b.attempt_id];
        want.sort();
        assert_eq!(reaped, Reaped { killed: want, stale: 0 });
        let _ = (first.wait(), second.wait());
        assert_group_dies(a.pgid);
        assert_group_dies(b.pgid);
        assert_eq!(fs::read(journal_path(ws.path())).unwrap(), b"");
        assert!(
            !lane_journal_path(ws.path(), 3).exists(),
            "a second helper's journal is deleted once reaped"
        );
        assert!(stray.exists(), "only journals are touched");
    }

    #[test]
    fn boot_reaping_ignores_a_record_whose_start_time_does_not_match() {
        let ws = workspace();
        let (mut child, mut rec) = spawn_group();
        // As if the pid had been reused by a process that started later than the record.
        rec.start_ticks += 1_000_000;
        Journal::new(ws.path()).record(&rec).unwrap();
        let reaped = reap_leftovers(ws.path()).unwrap();
        assert_eq!(reaped, Reaped { killed: vec![], stale: 1 });
        assert!(procfs::live_group_members(rec.pgid).len() >= 2, "the group must be untouched");
        assert_eq!(fs::read(journal_path(ws.path())).unwrap(), b"");
        kill::kill_group(Pid::from_raw(rec.pgid).unwrap());
        let _ = child.wait();
    }

    #[test]
    fn boot_reaping_honours_records_of_the_per_file_layout() {
        let ws = workspace();
        let (mut child, rec) = spawn_group();
        let legacy = legacy_dir(ws.path());
        fs::create_dir_all(&legacy).unwrap();
        fs::write(legacy.join(format!("{}.json", rec.attempt_id)), serde_json::to_vec(&rec).unwrap())
            .unwrap();
        fs::write(legacy.join("8.json"), b"{not json").unwrap();
        fs::write(legacy.join(".9.json.tmp"), b"partial").unwrap();
        let reaped = reap_leftovers(ws.path()).unwrap();
        assert_eq!(reaped, Reaped { killed: vec![rec.attempt_id], stale: 0 });
        let _ = child.wait();
        assert_group_dies(rec.pgid);
        assert!(!legacy.exists());
    }
}
