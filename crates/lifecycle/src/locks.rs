//! `flock`s on lock files (std's `File::lock`/`try_lock`): released when the holder exits,
//! however it exits, and immune to pid reuse. The files are opened close-on-exec, so no
//! child (worker, step) ever keeps a dead holder's lock alive.

use crate::error::{IoContext, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

impl Held {
    /// Writes `text` as the lock file's whole content (who holds it), for the next one who
    /// finds it held.
    pub fn record(&self, text: &str) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut f = &self._file;
        f.set_len(0)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(text.as_bytes())?;
        f.flush()
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .doing(|| format!("cannot open lock file {}", path.display()))
}

/// Takes the lock, waiting as long as another process holds it.
pub fn lock(path: &Path) -> Result<Held> {
    let file = open(path)?;
    file.lock().doing(|| format!("cannot lock {}", path.display()))?;
    Ok(Held { _file: file })
}

/// Takes the lock if it is free now; `None` if another holder has it.
pub fn try_lock(path: &Path) -> Result<Option<Held>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e).doing(|| format!("cannot lock {}", path.display())),
    }
}

/// Like [`try_lock`], retrying for `patience`: a probe (`is_held`) holds a free lock for
/// a moment, and must not be mistaken for an owner.
pub fn try_lock_patiently(path: &Path, patience: Duration) -> Result<Option<Held>> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(h) = try_lock(path)? {
            return Ok(Some(h));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while some process holds the lock. A missing lock file is not held.
pub fn is_held(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    Ok(try_lock(path)?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!is_held(&path).unwrap());
        let held = try_lock(&path).unwrap().unwrap();
        assert!(is_held(&path).unwrap());
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        // A child forked by another test of this binary holds a copy of every descriptor,
        // the lock's included, until it execs (close-on-exec): the release is polled for.
        let deadline = Instant::now() + Duration::from_secs(20);
        while is_held(&path).unwrap() {
            assert!(Instant::now() < deadline, "the released lock is still held");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _again = lock(&path).unwrap();
        assert!(try_lock_patiently(&path, Duration::from_millis(50)).unwrap().is_none());
    }
}
