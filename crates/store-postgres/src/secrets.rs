//! The `secrets` and `secret_key` tables (migration 6): sealed secrets per namespace and
//! name, and the fingerprint of the key-encryption key they are sealed with. Ciphertext and
//! key names only: nothing here seals, opens or sees a value. What a write changes is
//! `rota_store::secrets::decide`. Writes and re-seals lock the `secret_key` row first, so a
//! write under the old key cannot slip past a rotation (it waits, then sees the new key and
//! is refused).

use crate::codec::{i64_of, u64_of};
use crate::error::Result;
use crate::tx::{Tx, exec, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::resource::Applied;
use rota_store::StoreError;
use rota_store::secrets::{SecretRecord, SecretWrite, decide, same_secrets, stale_key};
use tokio_postgres::Row;

const COLUMNS: &str =
    "namespace, name, labels, generation, keys, sealed, key_fingerprint, created_at, updated_at";

const UPSERT: &str = "INSERT INTO secrets (namespace, name, labels, generation, keys, sealed, key_fingerprint, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
     ON CONFLICT (namespace, name) DO UPDATE SET labels = excluded.labels, generation = excluded.generation, \
        keys = excluded.keys, sealed = excluded.sealed, key_fingerprint = excluded.key_fingerprint, \
        updated_at = excluded.updated_at";

const RESEAL: &str = "UPDATE secrets SET sealed = $3, key_fingerprint = $4, updated_at = $5 WHERE namespace = $1 AND name = $2";

const FINGERPRINT: &str = "SELECT fingerprint FROM secret_key WHERE id = 1";

const LOCKED_FINGERPRINT: &str = "SELECT fingerprint FROM secret_key WHERE id = 1 FOR UPDATE";

const INIT_KEY: &str =
    "INSERT INTO secret_key (id, fingerprint, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";

const ROTATE_KEY: &str = "UPDATE secret_key SET fingerprint = $1, rotated_at = $2 WHERE id = 1";

fn decode(r: &Row) -> Result<SecretRecord> {
    Ok(SecretRecord {
        namespace: r.try_get(0)?,
        name: r.try_get(1)?,
        labels: serde_json::from_str(r.try_get(2)?)?,
        generation: u64_of(r.try_get(3)?),
        keys: serde_json::from_str(r.try_get(4)?)?,
        sealed: r.try_get(5)?,
        key_fingerprint: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// The fingerprint held, if any.
pub(crate) async fn fingerprint(tx: &Tx<'_>) -> Result<Option<String>> {
    Ok(opt(tx, FINGERPRINT, &[]).await?.map(|r| r.try_get(0)).transpose()?)
}

async fn locked_fingerprint(tx: &Tx<'_>) -> Result<Option<String>> {
    Ok(opt(tx, LOCKED_FINGERPRINT, &[]).await?.map(|r| r.try_get(0)).transpose()?)
}

/// Stores `fp` unless one is held; returns the one held afterwards.
pub(crate) async fn init_key(tx: &Tx<'_>, fp: &str, now: DateTime<Utc>) -> Result<String> {
    if fp.is_empty() {
        return Err(StoreError::Invalid("the secret key fingerprint is empty".into()).into());
    }
    exec(tx, INIT_KEY, &[&fp, &now]).await?;
    fingerprint(tx)
        .await?
        .ok_or_else(|| StoreError::Invalid("no secret key fingerprint after storing one".into()).into())
}

/// One secret.
pub(crate) async fn get(tx: &Tx<'_>, namespace: &str, name: &str) -> Result<Option<SecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secrets WHERE namespace = $1 AND name = $2");
    opt(tx, &sql, &[&namespace, &name]).await?.as_ref().map(decode).transpose()
}

/// The secrets of a namespace by name (byte order); every secret with `None`.
pub(crate) async fn list(tx: &Tx<'_>, namespace: Option<&str>) -> Result<Vec<SecretRecord>> {
    let found = match namespace {
        Some(ns) => {
            let sql =
                format!("SELECT {COLUMNS} FROM secrets WHERE namespace = $1 ORDER BY name COLLATE \"C\"");
            rows(tx, &sql, &[&ns]).await?
        }
        None => {
            let sql =
                format!("SELECT {COLUMNS} FROM secrets ORDER BY namespace COLLATE \"C\", name COLLATE \"C\"");
            rows(tx, &sql, &[]).await?
        }
    };
    found.iter().map(decode).collect()
}

/// Creates or replaces one secret, if it is sealed under the key held.
pub(crate) async fn put(tx: &Tx<'_>, w: &SecretWrite, now: DateTime<Utc>) -> Result<Applied> {
    let held = locked_fingerprint(tx).await?;
    if held.as_deref() != Some(w.key_fingerprint.as_str()) {
        return Err(stale_key(held.as_deref()).into());
    }
    let old = get(tx, &w.namespace, &w.name).await?;
    let (applied, generation) = decide(old.as_ref(), w);
    if applied != Applied::Unchanged {
        let labels = serde_json::to_string(&w.labels)?;
        let keys = serde_json::to_string(&w.keys)?;
        exec(
            tx,
            UPSERT,
            &[
                &w.namespace,
                &w.name,
                &labels,
                &i64_of(generation),
                &keys,
                &w.sealed,
                &w.key_fingerprint,
                &now,
            ],
        )
        .await?;
    }
    Ok(applied)
}

/// Deletes one secret; whether it existed.
pub(crate) async fn delete(tx: &Tx<'_>, namespace: &str, name: &str) -> Result<bool> {
    Ok(exec(tx, "DELETE FROM secrets WHERE namespace = $1 AND name = $2", &[&namespace, &name]).await? == 1)
}

/// Re-seals every secret under `to`, in the caller's transaction.
pub(crate) async fn reseal(
    tx: &Tx<'_>,
    from: &str,
    to: &str,
    resealed: &[SecretRecord],
    now: DateTime<Utc>,
) -> Result<()> {
    let held = locked_fingerprint(tx).await?;
    if held.as_deref() != Some(from) {
        return Err(stale_key(held.as_deref()).into());
    }
    if to.is_empty() {
        return Err(StoreError::Invalid("the secret key fingerprint is empty".into()).into());
    }
    same_secrets(&list(tx, None).await?, resealed)?;
    for s in resealed {
        exec(tx, RESEAL, &[&s.namespace, &s.name, &s.sealed, &to, &now]).await?;
    }
    exec(tx, ROTATE_KEY, &[&to, &now]).await?;
    Ok(())
}
