//! The control-plane credentials table: the admin and join token hashes every server of the
//! control plane shares. Stores hashes only, never a token; it does not hash, compare or
//! generate tokens (the server and the CLI do).

use crate::error::Result;
use crate::tx::{Tx, exec, rows};
use chrono::{DateTime, Utc};
use rota_store::{CredentialHashes, CredentialKind, GraceRotation, PreviousCredential, StoreError};

const SELECT_ALL: &str = "SELECT kind, hash, previous_hash, previous_until, handover FROM credentials";

/// Insert-if-absent: a kind already held keeps its hash (the first server to commit wins;
/// a concurrent insert waits for it and then does nothing).
const INSERT_IF_ABSENT: &str =
    "INSERT INTO credentials (kind, hash, created_at) VALUES ($1, $2, $3) ON CONFLICT (kind) DO NOTHING";

const ROTATE: &str = "INSERT INTO credentials (kind, hash, created_at) VALUES ($1, $2, $3) \
     ON CONFLICT (kind) DO UPDATE SET hash = excluded.hash, rotated_at = excluded.created_at, \
     previous_hash = NULL, previous_until = NULL, handover = NULL";

/// Keeps the replaced hash (the right-hand sides read the row as it was) until `$3`.
const ROTATE_WITH_GRACE: &str = "UPDATE credentials SET previous_hash = hash, previous_until = $3, \
     handover = $4, hash = $2, rotated_at = $5 WHERE kind = $1";

/// The hashes stored, per kind. Rows of an unknown kind (the CHECK forbids them) are ignored.
pub(crate) async fn credential_hashes(tx: &Tx<'_>) -> Result<CredentialHashes> {
    let mut held = CredentialHashes::default();
    for r in rows(tx, SELECT_ALL, &[]).await? {
        let Ok(kind) = r.try_get::<_, &str>(0)?.parse::<CredentialKind>() else { continue };
        held.set(kind, Some(r.try_get(1)?));
        let (previous, until): (Option<String>, Option<DateTime<Utc>>) = (r.try_get(2)?, r.try_get(3)?);
        if let (Some(hash), Some(until)) = (previous, until) {
            held.previous.push(PreviousCredential { kind, hash, until, handover: r.try_get(4)? });
        }
    }
    Ok(held)
}

/// Stores each proposed hash whose kind holds none yet; returns what is held afterwards.
pub(crate) async fn init_credentials(
    tx: &Tx<'_>,
    proposed: &CredentialHashes,
    now: DateTime<Utc>,
) -> Result<CredentialHashes> {
    for kind in CredentialKind::ALL {
        if let Some(hash) = proposed.get(kind) {
            check(kind, hash)?;
        }
    }
    for kind in CredentialKind::ALL {
        if let Some(hash) = proposed.get(kind) {
            exec(tx, INSERT_IF_ABSENT, &[&kind.as_str(), &hash, &now]).await?;
        }
    }
    credential_hashes(tx).await
}

/// Replaces (or first stores) the hash of `kind`.
pub(crate) async fn rotate_credential(
    tx: &Tx<'_>,
    kind: CredentialKind,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    check(kind, hash)?;
    exec(tx, ROTATE, &[&kind.as_str(), &hash, &now]).await?;
    Ok(())
}

/// Replaces the hash of `kind`, keeping the replaced one through the grace; stores the new
/// one plainly if none was held.
pub(crate) async fn rotate_with_grace(
    tx: &Tx<'_>,
    kind: CredentialKind,
    rotation: &GraceRotation,
    now: DateTime<Utc>,
) -> Result<()> {
    check(kind, &rotation.hash)?;
    let n = exec(
        tx,
        ROTATE_WITH_GRACE,
        &[&kind.as_str(), &rotation.hash, &rotation.until, &rotation.handover, &now],
    )
    .await?;
    if n == 0 {
        return rotate_credential(tx, kind, &rotation.hash, now).await;
    }
    Ok(())
}

fn check(kind: CredentialKind, hash: &str) -> Result<()> {
    if hash.is_empty() {
        return Err(StoreError::Invalid(format!("the {kind} credential hash is empty")).into());
    }
    Ok(())
}
