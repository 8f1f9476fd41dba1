//! Files only their owner may read or write (mode 0600): the database files, token files
//! and secret key files. Created with that mode by an explicit open mode (never a process
//! umask, which would also make step output private), and an existing one that is wider is
//! tightened with a notice naming it and its old mode. The one implementation: the CLI and
//! the SQLite backend both call it. It never changes a file's content or owner.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every private file.
pub const MODE: u32 = 0o600;

/// Creates `path` empty with mode 0600 if it does not exist (never truncating one that
/// does), then [`tighten`]s it. For files another library opens afterwards (SQLite).
pub fn ensure(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(MODE).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path).map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Sets an existing `path` to 0600 when group or others have any access, with a notice (a
/// warning in the log) naming the file and its old mode; returns that old mode when it
/// changed. A missing file is not an error (`Ok(None)`).
pub fn tighten(path: &Path) -> io::Result<Option<u32>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let old = meta.permissions().mode() & 0o7777;
    if old & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(old & 0o700 | MODE))?;
    tracing::warn!("{} was mode {old:04o}, readable by other users: tightened to 0600", path.display());
    Ok(Some(old))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_0600_keeps_content_and_tightens_wider_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        ensure(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::write(&p, b"kept").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure(&p).unwrap();
        assert_eq!((mode(&p), std::fs::read(&p).unwrap()), (0o600, b"kept".to_vec()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(tighten(&p).unwrap(), Some(0o640));
        assert_eq!(tighten(&p).unwrap(), None, "already private");
        assert_eq!(tighten(&dir.path().join("missing")).unwrap(), None);
    }
}
