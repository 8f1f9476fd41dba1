//! The worker's persistent instance id: a UUID kept in `<workspace>/.rota/instance-id`,
//! created once (written to a temporary file, synced, then renamed into place, so a crash
//! never leaves half an id) and read on every later start. It tells the server that a
//! registration is this worker coming back (same workspace, same id: a restart supersedes
//! its old session) rather than another worker taking its name. Read and written only
//! under the workspace lock; it must not be shared between workspaces.

use crate::error::WorkerError;
use crate::pgid;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `<workspace>/.rota/instance-id`.
pub(crate) fn path(ws: &Path) -> PathBuf {
    pgid::running_dir(ws).join("instance-id")
}

/// The workspace's instance id, created on first use. A file that does not hold a UUID is
/// moved aside (`instance-id.corrupt`) and replaced, with a warning: a new id only costs a
/// refusal while the old session is still live.
pub(crate) fn load_or_create(ws: &Path) -> Result<String, WorkerError> {
    let file = path(ws);
    let err = |path: &Path, source: io::Error| WorkerError::Workspace { path: path.to_path_buf(), source };
    match fs::read_to_string(&file) {
        Ok(text) => match uuid::Uuid::parse_str(text.trim()) {
            Ok(id) => return Ok(id.to_string()),
            Err(e) => {
                let aside = file.with_extension("corrupt");
                fs::rename(&file, &aside).map_err(|e| err(&file, e))?;
                tracing::warn!(file = %file.display(), moved_to = %aside.display(),
                    "the instance id file does not hold a UUID ({e}); starting as a new instance");
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&file, e)),
    }
    let id = uuid::Uuid::now_v7().to_string();
    let tmp = file.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &file)?;
        // The rename itself must survive a power loss, or the next start is a new instance.
        File::open(pgid::running_dir(ws))?.sync_all()
    };
    write().map_err(|e| err(&file, e))?;
    tracing::info!(instance_id = %id, file = %file.display(), "created this worker's instance id");
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept_and_a_corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        fs::create_dir_all(pgid::running_dir(ws)).unwrap();
        let first = load_or_create(ws).unwrap();
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        assert_eq!(load_or_create(ws).unwrap(), first, "the same workspace is the same instance");
        assert!(!path(ws).with_extension("tmp").exists());

        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(pgid::running_dir(other.path())).unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first, "another workspace is another instance");

        fs::write(path(ws), "not an id\n").unwrap();
        let replaced = load_or_create(ws).unwrap();
        assert_ne!(replaced, first);
        assert_eq!(fs::read_to_string(path(ws).with_extension("corrupt")).unwrap(), "not an id\n");
        assert_eq!(load_or_create(ws).unwrap(), replaced);
    }
}
