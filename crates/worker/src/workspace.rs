//! The workspace layout (`attempts/`, `.rota/running.log`, `.rota/pool/`), its exclusive
//! lock (one worker per workspace, since boot reaping kills every group recorded there) and
//! the attempt directories, recycled through the pool when left empty. It must not touch
//! attempt directories it did not create.

use crate::error::WorkerError;
use crate::pgid;
use crate::run_as::RunAs;
use rota_domain::AttemptId;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held for the worker's whole life; dropping it releases the workspace.
#[derive(Debug)]
pub(crate) struct WorkspaceLock {
    _file: File,
}

/// `<workspace>/.rota/pool`: empty directories waiting to become attempt directories.
fn pool_dir(ws: &Path) -> PathBuf {
    pgid::running_dir(ws).join("pool")
}

/// `<workspace>/.rota/worker.lock`: held (flock) by the one worker using the workspace.
pub(crate) fn lock_path(ws: &Path) -> PathBuf {
    pgid::running_dir(ws).join("worker.lock")
}

/// Takes the lock of workspace `ws` (whose `.rota` directory exists) without waiting;
/// `None` while another process holds it. The lock file is never removed: removing a lock
/// file others may be opening would let two holders in.
pub(crate) fn try_lock(ws: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(lock_path(ws))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Creates the workspace directories, takes the workspace lock, and empties the pool of
/// directories (an earlier worker's entries are not known to be empty any more). Under
/// `--run-as` (`owner`), `attempts/` (where steps create their `$ROTA_OUTPUT` files) and the
/// helpers' journal directory are that user's; `.rota` itself stays the worker's.
pub(crate) fn prepare(ws: &Path, owner: Option<&RunAs>) -> Result<WorkspaceLock, WorkerError> {
    let err = |path: &Path, source: io::Error| WorkerError::Workspace { path: path.to_path_buf(), source };
    for dir in [ws.join("attempts"), pgid::running_dir(ws)] {
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    }
    if let Some(owner) = owner {
        let steps = pgid::user_journal_dir(ws);
        fs::create_dir_all(&steps).map_err(|e| err(&steps, e))?;
        for dir in [ws.join("attempts"), steps] {
            chown_to(&dir, Some(owner)).map_err(|e| err(&dir, e))?;
        }
    }
    let lock_path = lock_path(ws);
    let Some(file) = try_lock(ws).map_err(|e| err(&lock_path, e))? else {
        return Err(WorkerError::WorkspaceInUse { path: ws.to_path_buf() });
    };
    let pool = pool_dir(ws);
    match fs::remove_dir_all(&pool) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&pool, e)),
        _ => {}
    }
    fs::create_dir_all(&pool).map_err(|e| err(&pool, e))?;
    // `$ROTA_OUTPUT` files an earlier worker was killed before reading: nobody will.
    if let Ok(entries) = fs::read_dir(ws.join("attempts")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".output") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(WorkspaceLock { _file: file })
}

/// Gives `path` to the `--run-as` user and its group (nothing without one).
pub(crate) fn chown_to(path: &Path, owner: Option<&RunAs>) -> io::Result<()> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid)),
        None => Ok(()),
    }
}

/// Empty directories kept in the pool at most.
const POOL_MAX: usize = 64;

/// What an attempt directory looked like when the step got it: anything a step can do to
/// its directory (add or remove entries, chmod, chown, set an ACL or xattr) changes one of
/// these, or at least the ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mode: u32,
    uid: u32,
    gid: u32,
    ctime: (i64, i64),
}

fn stamp(dir: &Path) -> Option<Stamp> {
    let m = fs::symlink_metadata(dir).ok()?;
    Some(Stamp { mode: m.mode(), uid: m.uid(), gid: m.gid(), ctime: (m.ctime(), m.ctime_nsec()) })
}

/// One attempt's own directory, `<workspace>/attempts/<attempt_id>`.
#[derive(Debug)]
pub(crate) struct AttemptDir {
    path: PathBuf,
    /// As handed to the step (`None`: unknown, so never recycled).
    stamp: Option<Stamp>,
}

impl AttemptDir {
    /// Where the step runs.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Attempt directories. Every attempt runs in its own empty `attempts/<attempt_id>`, which
/// is removed afterwards unless kept. A directory the step left untouched is renamed into
/// `.rota/pool/` instead, and the next attempt's directory is renamed out of it, so the
/// common step neither allocates nor frees an inode: on ext4 a mkdir + rmdir pair (inode
/// bitmap search, a directory block, its discard) cost more worker time than spawning.
#[derive(Debug)]
pub(crate) struct AttemptDirs {
    attempts: PathBuf,
    pool: PathBuf,
    state: Mutex<Pool>,
    /// The `--run-as` user new directories are given to.
    owner: Option<RunAs>,
}

#[derive(Debug, Default)]
struct Pool {
    /// Names of the empty directories in the pool.
    free: Vec<u64>,
    /// The last name given out.
    last: u64,
}

impl AttemptDirs {
    /// The attempt directories of `ws` (whose pool [`prepare`] emptied).
    pub(crate) fn new(ws: &Path) -> Self {
        Self { attempts: ws.join("attempts"), pool: pool_dir(ws), state: Mutex::default(), owner: None }
    }

    /// New attempt directories belong to `owner` (`--run-as`).
    pub(crate) fn owned_by(self, owner: Option<&RunAs>) -> Self {
        Self { owner: owner.cloned(), ..self }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file attempt `id` writes its outputs to (`$ROTA_OUTPUT`): beside its directory,
    /// not in it, so an untouched directory can still be reused.
    pub(crate) fn output_file(&self, id: AttemptId) -> PathBuf {
        self.attempts.join(format!("{id}.output"))
    }

    /// The empty directory of attempt `id`, from the pool when it has one. (A directory of
    /// that name that exists already and is not empty is used as it is, as `mkdir -p`
    /// would.)
    pub(crate) fn acquire(&self, id: AttemptId) -> io::Result<AttemptDir> {
        let path = self.attempts.join(id.to_string());
        let pooled = self.lock().free.pop();
        if let Some(n) = pooled {
            match fs::rename(self.pool.join(n.to_string()), &path) {
                Ok(()) => return Ok(AttemptDir { stamp: stamp(&path), path }),
                // The entry is gone (or `attempts/` is): forget it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => self.lock().free.push(n),
            }
        }
        fs::create_dir_all(&path)?;
        chown_to(&path, self.owner.as_ref())?;
        Ok(AttemptDir { stamp: stamp(&path), path })
    }

    /// After the step: nothing if `keep`. The directory goes back to the pool if the step
    /// left it as it got it, `reusable` says no process of the step can still use it, and
    /// the pool has room; else it is removed with its contents (on a blocking thread, as
    /// the step may have left a large tree).
    pub(crate) async fn release(&self, dir: AttemptDir, keep: bool, reusable: bool) {
        if keep || (reusable && self.recycle(&dir)) {
            return;
        }
        let path = dir.path;
        let res = tokio::task::spawn_blocking(move || match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err((path, e)),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err((path, e))) = res {
            tracing::warn!(dir = %path.display(), "cannot remove attempt directory: {e}");
        }
    }

    /// Moves an untouched, empty directory into the pool; false if it must be removed.
    fn recycle(&self, dir: &AttemptDir) -> bool {
        let n = {
            let mut pool = self.lock();
            if pool.free.len() >= POOL_MAX {
                return false;
            }
            pool.last += 1;
            pool.last
        };
        // The stamp catches changes of mode, owner and xattrs; only listing the directory
        // proves it empty (timestamps may be too coarse to show an entry added and removed).
        let untouched = dir.stamp.is_some() && stamp(&dir.path) == dir.stamp;
        if !untouched || !fs::read_dir(&dir.path).is_ok_and(|mut d| d.next().is_none()) {
            return false;
        }
        match fs::rename(&dir.path, self.pool.join(n.to_string())) {
            Ok(()) => {
                self.lock().free.push(n);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_workspace_is_locked_while_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let lock = prepare(&ws, None).unwrap();
        assert!(ws.join("attempts").is_dir());
        assert!(pgid::running_dir(&ws).is_dir());
        let second = prepare(&ws, None).unwrap_err();
        assert!(matches!(second, WorkerError::WorkspaceInUse { .. }), "{second:?}");
        assert!(second.to_string().contains("in use by another worker"), "{second}");
        assert!(std::error::Error::source(&second).is_none(), "the message must not repeat a source");
        drop(lock);
        // Another test of this binary that forks a child at this moment hands it a copy of
        // every descriptor, the lock's included, until the child execs (close-on-exec):
        // for that instant the lock is still held, so it is retried within a bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Err(e) = prepare(&ws, None) {
            assert!(std::time::Instant::now() < deadline, "the released lock is still held: {e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn pooled(ws: &Path) -> usize {
        fs::read_dir(pool_dir(ws)).unwrap().count()
    }

    #[tokio::test]
    async fn untouched_empty_directories_are_recycled_and_others_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path();
        fs::create_dir_all(pool_dir(ws).join("stale")).unwrap();
        let _lock = prepare(ws, None).unwrap();
        assert_eq!(pooled(ws), 0, "boot empties the pool");
        let dirs = AttemptDirs::new(ws);

        let a = dirs.acquire(AttemptId(1)).unwrap();
        assert_eq!(a.path(), ws.join("attempts/1"));
        assert!(a.path().is_dir());
        dirs.release(a, false, true).await;
        assert!(!ws.join("attempts/1").exists());
        assert_eq!(pooled(ws), 1);

        // The next attempt gets the pooled directory, empty, under its own name.
        let b = dirs.acquire(AttemptId(2)).unwrap();
        assert_eq!(pooled(ws), 0);
        assert_eq!(fs::read_dir(b.path()).unwrap().count(), 0);
        fs::write(b.path().join("f"), b"x").unwrap();
        dirs.release(b, false, true).await;
        assert!(!ws.join("attempts/2").exists(), "a used directory is removed");
        assert_eq!(pooled(ws), 0);

        // Emptied again: recycled only if nothing shows it was touched (coarse timestamps
        // may not), so either way it is gone from attempts/.
        let c = dirs.acquire(AttemptId(3)).unwrap();
        fs::write(c.path().join("f"), b"x").unwrap();
        fs::remove_file(c.path().join("f")).unwrap();
        dirs.release(c, false, true).await;
        assert!(!ws.join("attempts/3").exists());
        let before = pooled(ws);
        // Another mode, or maybe still in use by the step: removed.
        let d = dirs.acquire(AttemptId(4)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o500)).unwrap();
        dirs.release(d, false, true).await;
        let e = dirs.acquire(AttemptId(5)).unwrap();
        dirs.release(e, false, false).await;
        assert_eq!(fs::read_dir(ws.join("attempts")).unwrap().count(), 0);
        assert_eq!(pooled(ws), before.saturating_sub(2));

        // Kept: left alone.
        let f = dirs.acquire(AttemptId(6)).unwrap();
        dirs.release(f, true, true).await;
        assert!(ws.join("attempts/6").is_dir());
    }
}
