//! The control-plane credentials table (migration 6): the admin and join token hashes every
//! server of the control plane shares. Stores hashes only, never a token; it does not hash,
//! compare or generate tokens (the server and the CLI do).

use crate::codec::ms;
use crate::error::Result;
use chrono::{DateTime, Utc};
use rota_store::{CredentialHashes, CredentialKind, StoreError};
use rusqlite::Connection;

const SELECT_ALL: &str = "SELECT kind, hash FROM credentials";

/// Insert-if-absent: a kind already held keeps its hash (the first server to start wins).
const INSERT_IF_ABSENT: &str =
    "INSERT INTO credentials (kind, hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (kind) DO NOTHING";

const ROTATE: &str = "INSERT INTO credentials (kind, hash, created_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (kind) DO UPDATE SET hash = excluded.hash, rotated_at = excluded.created_at";

/// The hashes stored, per kind. Rows of an unknown kind (the CHECK forbids them) are ignored.
pub(crate) fn credential_hashes(conn: &Connection) -> Result<CredentialHashes> {
    let mut st = conn.prepare_cached(SELECT_ALL)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut held = CredentialHashes::default();
    for (kind, hash) in rows {
        if let Ok(kind) = kind.parse::<CredentialKind>() {
            held.set(kind, Some(hash));
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

fn check(kind: CredentialKind, hash: &str) -> Result<()> {
    if hash.is_empty() {
        return Err(StoreError::Invalid(format!("the {kind} credential hash is empty")).into());
    }
    Ok(())
}
