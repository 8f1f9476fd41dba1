//! Retiring the shared default workspace of releases before per-name workspaces: its
//! journal of running steps is reaped once (every group it still ties to a live process is
//! KILLed, as a worker booting on it would have done) and then removed, so it is never
//! read again. It runs under that workspace's own lock, so two workers starting together
//! do it once and a worker of an earlier release still running there is left alone. It
//! must not touch anything else in that directory (kept attempt directories, the new
//! per-name workspaces under it).

use crate::error::WorkerError;
use crate::pgid;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the old workspace's lock: long enough for another worker of this
/// release to finish retiring it (reaping waits up to 2 s per group), short enough not to
/// hold up a start behind a worker of an earlier release that still runs there.
const PATIENCE: Duration = Duration::from_secs(5);

/// What [`retire_shared_workspace`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// No journal there (never used, or already retired).
    Nothing,
    /// The journal was reaped and removed.
    Retired {
        /// Groups still alive that were KILLed.
        killed: usize,
        /// Records whose processes were gone.
        stale: usize,
    },
    /// A worker still holds that workspace (one of an earlier release, using it as its
    /// own): its groups are not leftovers, so nothing was touched. A later start retires it.
    InUse,
}

/// Reaps and retires the journal of `old`, the shared workspace earlier releases used by
/// default. Blocking (it waits for the lock and for killed groups): call it off the
/// async runtime.
pub fn retire_shared_workspace(old: &Path) -> Result<Retirement, WorkerError> {
    let err = |path: &Path, source: io::Error| WorkerError::Workspace { path: path.to_path_buf(), source };
    if !has_journal(old) {
        return Ok(Retirement::Nothing);
    }
    let lock_path = crate::workspace::lock_path(old);
    let Some(_lock) = lock_patiently(old).map_err(|e| err(&lock_path, e))? else {
        return Ok(Retirement::InUse);
    };
    // Under the lock: another worker may have retired it while this one waited.
    if !has_journal(old) {
        return Ok(Retirement::Nothing);
    }
    let reaped = pgid::reap_leftovers(old).map_err(|e| err(&pgid::running_dir(old), e))?;
    // Reaping left an empty journal (and no per-file records): remove it, and the pool of
    // empty attempt directories nobody will take from again. The lock file stays: removing
    // a lock file others may be opening would let two holders in.
    for (path, is_dir) in [(pgid::journal_path(old), false), (pgid::running_dir(old).join("pool"), true)] {
        let res = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match res {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&path, e)),
            _ => {}
        }
    }
    Ok(Retirement::Retired { killed: reaped.killed.len(), stale: reaped.stale })
}

/// True while `old` has records an earlier release may have left: its journal, or the
/// per-file records (`.rota/running/`) of the releases before the journal.
fn has_journal(old: &Path) -> bool {
    pgid::journal_path(old).exists() || pgid::running_dir(old).join("running").exists()
}

/// The workspace lock of `old`, within [`PATIENCE`]; `None` if another process keeps it.
fn lock_patiently(old: &Path) -> io::Result<Option<File>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match crate::workspace::try_lock(old)? {
            Some(file) => return Ok(Some(file)),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => return Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::procfs;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// A journal line exactly as the previous release wrote it.
    fn old_line(pid: i32, start_ticks: u64) -> String {
        format!("+{{\"attemptId\":7,\"pid\":{pid},\"pgid\":{pid},\"startTicks\":{start_ticks}}}\n")
    }

    #[test]
    fn a_journal_is_reaped_once_then_gone_and_a_held_workspace_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path();
        assert_eq!(retire_shared_workspace(old).unwrap(), Retirement::Nothing);
        assert!(!pgid::running_dir(old).exists(), "nothing is created where nothing was");

        let mut child =
            Command::new("sleep").arg("300").process_group(0).stdin(Stdio::null()).spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let ticks = procfs::read_stat(pid).unwrap().start_ticks;
        fs::create_dir_all(pgid::running_dir(old).join("pool/3")).unwrap();
        fs::create_dir_all(old.join("attempts/9")).unwrap();
        fs::write(pgid::journal_path(old), old_line(pid, ticks)).unwrap();

        // Held by a worker using it as its own workspace: its groups are its own.
        let held = crate::workspace::prepare(old, None).unwrap();
        let began = Instant::now();
        assert_eq!(retire_shared_workspace(old).unwrap(), Retirement::InUse);
        assert!(began.elapsed() >= PATIENCE);
        assert!(procfs::read_stat(pid).is_ok_and(|s| !s.is_zombie()), "a held workspace's group was killed");
        drop(held);

        let deadline = Instant::now() + Duration::from_secs(20);
        let done = loop {
            // A child forked by another test may hold a copy of the lock for an instant.
            match retire_shared_workspace(old).unwrap() {
                Retirement::InUse => assert!(Instant::now() < deadline, "the lock stays held"),
                other => break other,
            }
        };
        assert_eq!(done, Retirement::Retired { killed: 1, stale: 0 });
        let _ = child.wait();
        assert!(!pgid::journal_path(old).exists(), "the journal must be retired");
        assert!(!pgid::running_dir(old).join("pool").exists());
        assert!(old.join("attempts/9").is_dir(), "kept attempt directories stay");
        assert_eq!(retire_shared_workspace(old).unwrap(), Retirement::Nothing);
    }
}
