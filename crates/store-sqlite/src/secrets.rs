//! The `secrets` and `secret_key` tables (migration 11): sealed secrets per namespace and
//! name, and the fingerprint of the key-encryption key they are sealed with. Ciphertext and
//! key names only: nothing here seals, opens or sees a value. What a write changes is
//! `rota_store::secrets::decide`; a write or re-seal under another key than the one held
//! is refused inside the same writer op, so it cannot race a rotation.

use crate::codec::{from_json, i64_of, ms, time, to_json};
use crate::error::Result;
use chrono::{DateTime, Utc};
use rota_domain::resource::Applied;
use rota_store::StoreError;
use rota_store::secrets::{SecretRecord, SecretWrite, decide, same_secrets, stale_key};
use rusqlite::{Connection, OptionalExtension, Row};

const COLUMNS: &str =
    "namespace, name, labels, generation, keys, sealed, key_fingerprint, created_at, updated_at";

const UPSERT: &str = "INSERT INTO secrets (namespace, name, labels, generation, keys, sealed, key_fingerprint, \
     created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
     ON CONFLICT (namespace, name) DO UPDATE SET labels = excluded.labels, generation = excluded.generation, \
        keys = excluded.keys, sealed = excluded.sealed, key_fingerprint = excluded.key_fingerprint, \
        updated_at = excluded.updated_at";

const RESEAL: &str = "UPDATE secrets SET sealed = ?3, key_fingerprint = ?4, updated_at = ?5 WHERE namespace = ?1 AND name = ?2";

const FINGERPRINT: &str = "SELECT fingerprint FROM secret_key WHERE id = 1";

const INIT_KEY: &str =
    "INSERT INTO secret_key (id, fingerprint, created_at) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING";

const ROTATE_KEY: &str = "UPDATE secret_key SET fingerprint = ?1, rotated_at = ?2 WHERE id = 1";

type RawRow = (String, String, String, i64, String, Vec<u8>, String, i64, i64);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn decode(row: RawRow) -> Result<SecretRecord> {
    let (namespace, name, labels, generation, keys, sealed, key_fingerprint, created, updated) = row;
    Ok(SecretRecord {
        namespace,
        name,
        labels: from_json(&labels)?,
        generation: u64::try_from(generation).unwrap_or(0),
        keys: from_json(&keys)?,
        sealed,
        key_fingerprint,
        created_at: time(created)?,
        updated_at: time(updated)?,
    })
}

/// The fingerprint held, if any.
pub(crate) fn fingerprint(conn: &Connection) -> Result<Option<String>> {
    Ok(conn.prepare_cached(FINGERPRINT)?.query_row([], |r| r.get(0)).optional()?)
}

/// Stores `fp` unless one is held; returns the one held afterwards.
pub(crate) fn init_key(conn: &Connection, fp: &str, now: DateTime<Utc>) -> Result<String> {
    if fp.is_empty() {
        return Err(StoreError::Invalid("the secret key fingerprint is empty".into()).into());
    }
    conn.prepare_cached(INIT_KEY)?.execute((fp, ms(now)))?;
    fingerprint(conn)?
        .ok_or_else(|| StoreError::Invalid("no secret key fingerprint after storing one".into()).into())
}

/// One secret.
pub(crate) fn get(conn: &Connection, namespace: &str, name: &str) -> Result<Option<SecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secrets WHERE namespace = ?1 AND name = ?2");
    conn.prepare_cached(&sql)?.query_row((namespace, name), raw).optional()?.map(decode).transpose()
}

/// The secrets of a namespace by name; every secret with `None`.
pub(crate) fn list(conn: &Connection, namespace: Option<&str>) -> Result<Vec<SecretRecord>> {
    let rows = match namespace {
        Some(ns) => {
            let sql = format!("SELECT {COLUMNS} FROM secrets WHERE namespace = ?1 ORDER BY name");
            conn.prepare_cached(&sql)?.query_map([ns], raw)?.collect::<rusqlite::Result<Vec<_>>>()?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM secrets ORDER BY namespace, name");
            conn.prepare_cached(&sql)?.query_map([], raw)?.collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    rows.into_iter().map(decode).collect()
}

/// Creates or replaces one secret, if it is sealed under the key held.
pub(crate) fn put(conn: &Connection, w: &SecretWrite, now: DateTime<Utc>) -> Result<Applied> {
    let held = fingerprint(conn)?;
    if held.as_deref() != Some(w.key_fingerprint.as_str()) {
        return Err(stale_key(held.as_deref()).into());
    }
    let old = get(conn, &w.namespace, &w.name)?;
    let (applied, generation) = decide(old.as_ref(), w);
    if applied != Applied::Unchanged {
        conn.prepare_cached(UPSERT)?.execute((
            &w.namespace,
            &w.name,
            to_json(&w.labels)?,
            i64_of(generation),
            to_json(&w.keys)?,
            &w.sealed,
            &w.key_fingerprint,
            ms(now),
        ))?;
    }
    Ok(applied)
}

/// Deletes one secret; whether it existed.
pub(crate) fn delete(conn: &Connection, namespace: &str, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM secrets WHERE namespace = ?1 AND name = ?2")?
        .execute((namespace, name))?;
    Ok(n == 1)
}

/// Re-seals every secret under `to` (the caller's savepoint makes it one change).
pub(crate) fn reseal(
    conn: &Connection,
    from: &str,
    to: &str,
    resealed: &[SecretRecord],
    now: DateTime<Utc>,
) -> Result<()> {
    let held = fingerprint(conn)?;
    if held.as_deref() != Some(from) {
        return Err(stale_key(held.as_deref()).into());
    }
    if to.is_empty() {
        return Err(StoreError::Invalid("the secret key fingerprint is empty".into()).into());
    }
    same_secrets(&list(conn, None)?, resealed)?;
    let mut st = conn.prepare_cached(RESEAL)?;
    for s in resealed {
        st.execute((&s.namespace, &s.name, &s.sealed, to, ms(now)))?;
    }
    conn.prepare_cached(ROTATE_KEY)?.execute((to, ms(now)))?;
    Ok(())
}
