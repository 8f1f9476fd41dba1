//! The control-plane credentials table (migration 6): the admin and join token hashes every
//! server of the control plane shares. Stores hashes only, never a token; it does not hash,
//! compare or generate tokens (the server and the CLI do).

use crate::codec::{ms, time};
use crate::error::Result;
use chrono::{DateTime, Utc};
use rota_store::{CredentialHashes, CredentialKind, GraceRotation, PreviousCredential, StoreError};
use rusqlite::Connection;

const SELECT_ALL: &str = "SELECT kind, hash, previous_hash, previous_until, handover FROM credentials";

/// Insert-if-absent: a kind already held keeps its hash (the first server to start wins).
const INSERT_IF_ABSENT: &str =
    "INSERT INTO credentials (kind, hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (kind) DO NOTHING";

const ROTATE: &str = "INSERT INTO credentials (kind, hash, created_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (kind) DO UPDATE SET hash = excluded.hash, rotated_at = excluded.created_at, \
     previous_hash = NULL, previous_until = NULL, handover = NULL";

/// Keeps the replaced hash (the right-hand sides read the row as it was) until `?3`.
const ROTATE_WITH_GRACE: &str = "UPDATE credentials SET previous_hash = hash, previous_until = ?3, \
     handover = ?4, hash = ?2, rotated_at = ?5 WHERE kind = ?1";

/// The hashes stored, per kind. Rows of an unknown kind (the CHECK forbids them) are ignored.
pub(crate) fn credential_hashes(conn: &Connection) -> Result<CredentialHashes> {
    let mut st = conn.prepare_cached(SELECT_ALL)?;
    type Row = (String, String, Option<String>, Option<i64>, Option<String>);
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    let mut held = CredentialHashes::default();
    for (kind, hash, previous, until, handover) in rows {
        let Ok(kind) = kind.parse::<CredentialKind>() else { continue };
        held.set(kind, Some(hash));
        if let (Some(hash), Some(until)) = (previous, until) {
            held.previous.push(PreviousCredential { kind, hash, until: time(until)?, handover });
        }
    }
    Ok(held)
}

/// Stores each proposed hash whose kind holds none yet; returns what is held afterwards.
/// On the writer thread, so two servers' calls (one process or, through SQLite's write
/// lock, two) are serialized and the second sees the first's rows.
pub(crate) fn init_credentials(
    conn: &Connection,
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
            conn.prepare_cached(INSERT_IF_ABSENT)?.execute((kind.as_str(), hash, ms(now)))?;
        }
    }
    credential_hashes(conn)
}

/// Replaces (or first stores) the hash of `kind`.
pub(crate) fn rotate_credential(
    conn: &Connection,
    kind: CredentialKind,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    check(kind, hash)?;
    conn.prepare_cached(ROTATE)?.execute((kind.as_str(), hash, ms(now)))?;
    Ok(())
}

/// Replaces the hash of `kind`, keeping the replaced one through the grace; stores the new
/// one plainly if none was held.
pub(crate) fn rotate_with_grace(
    conn: &Connection,
    kind: CredentialKind,
    rotation: &GraceRotation,
    now: DateTime<Utc>,
) -> Result<()> {
    check(kind, &rotation.hash)?;
    let n = conn.prepare_cached(ROTATE_WITH_GRACE)?.execute((
        kind.as_str(),
        &rotation.hash,
        ms(rotation.until),
        &rotation.handover,
        ms(now),
    ))?;
    if n == 0 {
        return rotate_credential(conn, kind, &rotation.hash, now);
    }
    Ok(())
}

fn check(kind: CredentialKind, hash: &str) -> Result<()> {
    if hash.is_empty() {
        return Err(StoreError::Invalid(format!("the {kind} credential hash is empty")).into());
    }
    Ok(())
}
