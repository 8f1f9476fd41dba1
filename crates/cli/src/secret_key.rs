//! The secret key file (`--secret-key-file`): the key-encryption key secrets are sealed
//! with, and its agreement with the store. The store keeps the key's fingerprint (never the
//! key); a start on a store that holds none creates the file (32 random bytes, base64, mode
//! 0600, written atomically) unless one exists, and stores its fingerprint; otherwise the
//! file must hold the key whose fingerprint the store keeps, or the server refuses to start
//! (exit 78, as for a foreign token file), naming both fingerprints and the file. The key
//! is never printed or logged; its path and fingerprint are.

use crate::failure::{EXIT_CONFIG, with_code};
use anyhow::{Context, Result, anyhow};
use rota_server::secrets::{Keyring, SecretKey};
use rota_store::JobStore;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use zeroize::Zeroizing;

/// The key a server starts with, and whether this start created its file.
pub(crate) struct StartKey {
    pub(crate) keyring: Keyring,
    pub(crate) created: bool,
}

/// Reads the key file; `None` if it does not exist.
fn read(path: &Path) -> Result<Option<SecretKey>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let key = SecretKey::from_text(&text)
                .map_err(|e| with_code(EXIT_CONFIG, anyhow!("secret key file {}: {e}", path.display())))?;
            crate::tokens::tighten(path);
            Ok(Some(key))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the secret key file {}", path.display())),
    }
}

/// Creates the key file with a fresh key unless it exists (then its key is returned); the
/// flag says whether this call created it.
fn read_or_create(path: &Path) -> Result<(SecretKey, bool)> {
    if let Some(key) = read(path)? {
        return Ok((key, false));
    }
    let key = SecretKey::generate();
    let created = crate::tokens::create_private(path, &key.to_text())
        .with_context(|| format!("cannot write the secret key file {}", path.display()))?;
    if !created {
        let theirs = read(path)?.with_context(|| format!("secret key file {} vanished", path.display()))?;
        return Ok((theirs, false));
    }
    Ok((key, true))
}

/// The key of `path`, agreed with the store: created (file and fingerprint) when the store
/// holds none; else the file must hold the store's key. A refusal is exit 78.
pub(crate) async fn settle_with_store(store: &dyn JobStore, path: &Path) -> Result<StartKey> {
    let held = store.secret_key_fingerprint().await.context("cannot read the secret key fingerprint")?;
    let (key, created) = match &held {
        None => read_or_create(path)?,
        Some(fp) => match read(path)? {
            Some(key) => (key, false),
            None => {
                return Err(with_code(
                    EXIT_CONFIG,
                    anyhow!(
                        "secret key file {} does not exist, but this database's secrets are sealed with the \
                         key of fingerprint {fp}: copy the secret key file from a server of this control plane \
                         to {0} (mode 0600), or pass its path with --secret-key-file",
                        path.display()
                    ),
                ));
            }
        },
    };
    let agreed = store
        .init_secret_key(&key.fingerprint(), store.now())
        .await
        .context("cannot store the secret key fingerprint")?;
    if agreed != key.fingerprint() {
        if created {
            // Ours lost a race with another server's first start: ours guards nothing.
            let _ = fs::remove_file(path);
        }
        return Err(with_code(
            EXIT_CONFIG,
            anyhow!(
                "secret key mismatch: the key in {} (fingerprint {}) is not the key this database's secrets \
                 are sealed with (fingerprint {agreed}); every server of a control plane needs the same key \
                 file: copy it from a server that started with this database",
                path.display(),
                key.fingerprint()
            ),
        ));
    }
    Ok(StartKey { keyring: Keyring::new(key, Some(path.to_path_buf())), created })
}

/// The key file for `rota secret rotate-key`: the one at `path`, or a new one created there.
pub(crate) fn new_key(path: &Path) -> Result<(SecretKey, bool)> {
    read_or_create(path)
}
