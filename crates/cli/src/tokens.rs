//! The admin and join token files. The first server start on a machine generates them
//! (32 random bytes, hex) into 0600 files, atomically: a temp file is written and fsynced,
//! then hard-linked into place, so a reader never sees half a token and two servers
//! starting at once agree on one. Later starts, and the CLI, read them. Tokens are never
//! printed or logged; only their paths are.

use anyhow::{Context, Result, bail};
use rand::RngCore;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads a token file; `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let token = s.trim();
            if token.is_empty() {
                bail!("token file {} is empty; delete it and restart the server", path.display());
            }
            Ok(Some(token.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read token file {}", path.display())),
    }
}

/// Returns the token in `path`, generating it first if the file does not exist yet; the
/// flag says whether this call created it.
pub(crate) fn read_or_create(path: &Path) -> Result<(String, bool)> {
    if let Some(token) = read(path)? {
        warn_if_readable_by_others(path);
        return Ok((token, false));
    }
    let dir = path.parent().context("token path has no directory")?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);

    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_synced(&tmp, &token);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        // Another process created it between our read and our link: theirs wins.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&tmp);
    let linked = linked.with_context(|| format!("cannot write token file {}", path.display()))?;
    if !linked {
        let theirs = read(path)?.with_context(|| format!("token file {} vanished", path.display()))?;
        return Ok((theirs, false));
    }
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok((token, true))
}

fn write_synced(path: &Path, token: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!("token file {} is readable by other users; run: chmod 600 {0}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        assert_eq!(read(&path).unwrap(), None);
        let (a, created) = read_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_or_create(&path).unwrap(), (a.clone(), false));
        assert_eq!(read(&path).unwrap().as_deref(), Some(a.as_str()));
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }
}
