//! The admin and join tokens: their files, and their agreement with the store. The store
//! holds each token's SHA-256 hash (shared by every server of the control plane); the files
//! hold the tokens, which a hash cannot be turned back into. A server start generates a
//! token (32 random bytes, hex, into a 0600 file) only when the store holds none of its
//! kind, and otherwise needs the file that matches the store's hash
//! ([`settle_with_store`]); [`rotate`] replaces one. Files are written atomically: a temp
//! file is written and fsynced, then linked or renamed into place, so a reader never sees
//! half a token and two servers starting at once agree on one. Tokens are never printed or
//! logged; only their paths are.

use crate::config::Paths;
use crate::database::Database;
use crate::failure::{EXIT_CONFIG, with_code};
use anyhow::{Context, Result, anyhow, bail};
use rota_store::{CredentialHashes, CredentialKind, JobStore};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Reads a token file; `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let token = s.trim();
            if token.is_empty() {
                bail!(
                    "token file {} is empty; copy the token into it from the machine that created it, \
                     or replace the token with `rota server rotate-token admin|join`",
                    path.display()
                );
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
        tighten(path);
        return Ok((token, false));
    }
    let token = generate();
    if !create_private(path, &format!("{token}\n"))
        .with_context(|| format!("cannot write token file {}", path.display()))?
    {
        let theirs = read(path)?.with_context(|| format!("token file {} vanished", path.display()))?;
        return Ok((theirs, false));
    }
    Ok((token, true))
}

/// Creates `path` holding `text`, mode 0600 in a 0700 directory, unless it exists: `true`
/// when this call created it, `false` when another process did first (theirs wins). The
/// file is written whole and synced (then its directory) before it appears under its name.
/// The one way rota creates a credential file (tokens, the secret key).
pub(crate) fn create_private(path: &Path, text: &str) -> Result<bool> {
    let (dir, tmp) = temp_beside(path)?;
    let written = write_synced(&tmp, text);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        // Another process created it between the caller's read and this link.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&tmp);
    let linked = linked?;
    if linked {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(linked)
}

/// A fresh token: 32 random bytes, hex (the server's one generator).
fn generate() -> String {
    rota_server::new_token()
}

/// The directory of `path` (created 0700 if missing) and a temp file name in it.
fn temp_beside(path: &Path) -> Result<(&Path, PathBuf)> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((dir, dir.join(format!(".{name}.{}.tmp", std::process::id()))))
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// An existing token file readable by others is tightened to 0600, with a notice; a file
/// this user may not chmod keeps a warning.
pub(crate) fn tighten(path: &Path) {
    if let Err(e) = rota_store::private_file::tighten(path) {
        tracing::warn!("{} is readable by other users and cannot be tightened to 0600: {e}", path.display());
    }
}

/// The token file of `kind`.
pub(crate) fn path_of(paths: &Paths, kind: CredentialKind) -> PathBuf {
    match kind {
        CredentialKind::Admin => paths.admin_token(),
        CredentialKind::Join => paths.join_token(),
    }
}

/// One token a server starts with.
#[derive(Clone, Debug)]
pub(crate) struct StartToken {
    pub(crate) token: String,
    /// This start generated its file.
    pub(crate) created: bool,
}

/// The admin and join tokens of a server start, agreed with the store.
#[derive(Clone, Debug)]
pub(crate) struct StartTokens {
    pub(crate) admin: StartToken,
    pub(crate) join: StartToken,
}

/// Makes the token files and the store's hashes agree before a server starts. Per kind:
/// the store holds no hash (a new store, or one written before the store kept them) →
/// the existing file is read, or a new one generated, and its hash stored (first writer
/// wins); the store holds a hash → the file must exist and match it. A missing or
/// mismatched file is refused (exit 78: a restart would not fix it) with what to do.
pub(crate) async fn settle_with_store(
    store: &dyn JobStore,
    paths: &Paths,
    database: &Database,
) -> Result<StartTokens> {
    let held = store.credential_hashes().await.context("cannot read the tokens' hashes from the store")?;
    let mut proposed = CredentialHashes::default();
    let mut found = Vec::with_capacity(2);
    for kind in CredentialKind::ALL {
        let path = path_of(paths, kind);
        let start = match held.get(kind) {
            None => {
                let (token, created) = read_or_create(&path)?;
                proposed.set(kind, Some(rota_server::hash_token(&token)));
                StartToken { token, created }
            }
            Some(hash) => match read(&path)? {
                None => return Err(with_code(EXIT_CONFIG, missing_file(kind, &path, paths, database))),
                Some(token) if rota_server::hash_token(&token) != hash => {
                    return Err(with_code(EXIT_CONFIG, mismatched_file(kind, &path, paths, database)));
                }
                Some(token) => {
                    tighten(&path);
                    StartToken { token, created: false }
                }
            },
        };
        found.push((kind, start));
    }
    if proposed != CredentialHashes::default() {
        let now = chrono::Utc::now();
        let stored =
            store.init_credentials(&proposed, now).await.context("cannot store the tokens' hashes")?;
        for (kind, start) in &found {
            if proposed.get(*kind).is_some_and(|p| stored.get(*kind) != Some(p)) {
                // Another server over this store, with other token files, stored its token
                // between our read and our write. A file this start made is worth nothing.
                let path = path_of(paths, *kind);
                if start.created {
                    let _ = fs::remove_file(&path);
                }
                return Err(with_code(EXIT_CONFIG, mismatched_file(*kind, &path, paths, database)));
            }
        }
    }
    let mut found = found.into_iter().map(|(_, t)| t);
    match (found.next(), found.next()) {
        (Some(admin), Some(join)) => Ok(StartTokens { admin, join }),
        _ => Err(anyhow!("internal: expected an admin and a join token")),
    }
}

fn missing_file(kind: CredentialKind, path: &Path, paths: &Paths, database: &Database) -> anyhow::Error {
    anyhow!(
        "the store {db} already holds the {kind} token's hash, but its file {path} does not exist, \
         and a hash cannot be turned back into the token: copy \
         {name} (mode 0600) from the machine or home that created it (the data directory of the \
         server that first used this store) to {path}, or replace the token with \
         `rota server rotate-token {kind}{flag}` (every client or worker that uses it then needs \
         the new file)",
        db = database,
        path = path.display(),
        name = file_name(path),
        flag = database.flag(paths),
    )
}

fn mismatched_file(kind: CredentialKind, path: &Path, paths: &Paths, database: &Database) -> anyhow::Error {
    anyhow!(
        "{path} does not hold the {kind} token the store {db} holds: the token was rotated \
         elsewhere, or the file belongs to another store. Copy the current {name} from where the \
         token was created or rotated to {path}, or replace the token with \
         `rota server rotate-token {kind}{flag}`",
        db = database,
        path = path.display(),
        name = file_name(path),
        flag = database.flag(paths),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Replaces the token of `kind`: a new token is written to a temp file beside `path`
/// (0600, fsynced), its hash replaces the store's, then the file is renamed over `path`. If
/// the store refuses, nothing changed; if the rename fails after the store took the hash,
/// the error names the temp file holding the new token.
pub(crate) async fn rotate(store: &dyn JobStore, kind: CredentialKind, path: &Path) -> Result<()> {
    // Written (not yet in place) before the store changes: a file that cannot be written
    // leaves everything as it was.
    let staged = Staged::new(path, &generate())?;
    let now = chrono::Utc::now();
    if let Err(e) = store.rotate_credential(kind, &rota_server::hash_token(&staged.token), now).await {
        staged.discard();
        return Err(e).context("cannot store the new token's hash; nothing was changed");
    }
    let tmp = staged.tmp.clone();
    staged.commit().with_context(|| {
        format!(
            "the store holds the new {kind} token, but it could not be moved into place: it is in \
             {}; move it to {}",
            tmp.display(),
            path.display()
        )
    })
}

/// A token written and synced to a 0600 temp file beside its file, not yet in place:
/// [`Staged::commit`] renames it over the file and syncs the directory, so a reader sees the
/// old token or the new one, never half of either.
struct Staged {
    token: String,
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    fn new(path: &Path, token: &str) -> Result<Self> {
        let (dir, tmp) = temp_beside(path)?;
        if let Err(e) = write_synced(&tmp, &format!("{token}\n")) {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
        Ok(Self { token: token.to_string(), dir: dir.to_path_buf(), tmp, path: path.to_path_buf() })
    }

    fn commit(self) -> Result<()> {
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot move the new token into {}", self.path.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", self.dir.display()))
    }

    fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
