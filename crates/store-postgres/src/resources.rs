//! The `resources` table (migration 2): declared resources, applied and deleted in batches
//! that are one transaction each (all or nothing). Applies from several servers are
//! serialized by a transaction-scoped advisory lock (they are rare, and a create racing a
//! create must see it to get the generation right). What an apply does to a row comes from
//! `rota_domain::resource::apply`; nothing here validates a spec.

use crate::codec::{i64_of, u64_of};
use crate::error::Result;
use crate::tx::{Tx, exec, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::resource::{self, Applied, Kind, Metadata, Status};
use rota_store::StoreError;
use rota_store::resources::{AppliedResource, ResourceKey, ResourceRecord, ResourceWrite, check_distinct};
use tokio_postgres::Row;

/// The advisory lock resource applies and deletes take ("rotarsrc").
const RESOURCES_LOCK: i64 = 0x726f_7461_7273_7263;

const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

const COLUMNS: &str = "kind, name, labels, generation, spec, status, created_at, updated_at, namespace";

const UPSERT: &str = "INSERT INTO resources (kind, name, labels, generation, spec, status, created_at, updated_at, \
     namespace) VALUES ($1, $2, $3, $4, $5, '{}', $6, $6, $7) \
     ON CONFLICT (kind, namespace, name) DO UPDATE SET labels = excluded.labels, generation = excluded.generation, \
        spec = excluded.spec, updated_at = excluded.updated_at";

const DELETE: &str = "DELETE FROM resources WHERE kind = $1 AND namespace = $3 AND name = $2";

const SET_STATUS: &str = "UPDATE resources SET status = $4, updated_at = $5 WHERE kind = $1 AND namespace = $6 \
     AND name = $2 AND generation = $3";

fn decode(r: &Row) -> Result<ResourceRecord> {
    let kind: &str = r.try_get(0)?;
    let kind = Kind::parse(kind).map_err(|e| StoreError::Invalid(format!("stored resource: {e}")))?;
    Ok(ResourceRecord {
        kind,
        metadata: Metadata {
            name: r.try_get(1)?,
            namespace: r.try_get(8)?,
            labels: serde_json::from_str(r.try_get(2)?)?,
        },
        generation: u64_of(r.try_get(3)?),
        spec: r.try_get(4)?,
        status: serde_json::from_str(r.try_get(5)?)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

/// One resource.
pub(crate) async fn get(tx: &Tx<'_>, key: &ResourceKey) -> Result<Option<ResourceRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE kind = $1 AND namespace = $3 AND name = $2");
    opt(tx, &sql, &[&key.kind.as_str(), &key.name, &key.namespace]).await?.as_ref().map(decode).transpose()
}

/// Creates or updates every write, in the caller's transaction.
pub(crate) async fn apply(
    tx: &Tx<'_>,
    writes: &[ResourceWrite],
    now: DateTime<Utc>,
) -> Result<Vec<AppliedResource>> {
    check_distinct(writes.iter().map(ResourceWrite::key))?;
    exec(tx, LOCK, &[&RESOURCES_LOCK]).await?;
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let old = get(tx, &w.key()).await?;
        let previous = old.as_ref().map(|o| resource::Stored {
            kind: o.kind,
            metadata: o.metadata.clone(),
            generation: o.generation,
            spec: o.spec.clone(),
            status: Status::default(),
        });
        let (next, applied) = resource::apply(w.kind, previous, w.metadata.clone(), w.spec.clone());
        if applied != Applied::Unchanged {
            let labels = serde_json::to_string(&next.metadata.labels)?;
            exec(
                tx,
                UPSERT,
                &[
                    &w.kind.as_str(),
                    &w.metadata.name,
                    &labels,
                    &i64_of(next.generation),
                    &next.spec,
                    &now,
                    &w.metadata.namespace,
                ],
            )
            .await?;
        }
        out.push(AppliedResource { applied, generation: next.generation, previous: old });
    }
    Ok(out)
}

/// Deletes every key, in the caller's transaction; per key, whether it existed.
pub(crate) async fn delete(tx: &Tx<'_>, keys: &[ResourceKey]) -> Result<Vec<bool>> {
    check_distinct(keys.iter().cloned())?;
    exec(tx, LOCK, &[&RESOURCES_LOCK]).await?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(exec(tx, DELETE, &[&k.kind.as_str(), &k.name, &k.namespace]).await? == 1);
    }
    Ok(out)
}

/// A page of the resources of `kind` in `namespace` (`None`: every namespace): (namespace,
/// name) after `after` (if given), at most `limit`, by namespace then name. Compared and
/// ordered in the `"C"` collation (byte order, as SQLite's), never the database's own: a
/// cursor must mean the same whichever locale the database was made with. No cursor is
/// `('', '')`, before every key (names are never empty).
pub(crate) async fn list(
    tx: &Tx<'_>,
    kind: Kind,
    namespace: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> Result<Vec<ResourceRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE kind = $1 AND ($5::text IS NULL OR namespace = $5) \
         AND (namespace COLLATE \"C\", name COLLATE \"C\") > ($2::text COLLATE \"C\", $3::text COLLATE \"C\") \
         ORDER BY namespace COLLATE \"C\", name COLLATE \"C\" LIMIT $4"
    );
    let (after_ns, after_name) = after.unwrap_or(("", ""));
    rows(tx, &sql, &[&kind.as_str(), &after_ns, &after_name, &i64::from(limit), &namespace])
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Records a status observed at `generation`; false if the resource is gone or moved on.
pub(crate) async fn set_status(
    tx: &Tx<'_>,
    key: &ResourceKey,
    generation: u64,
    status: &Status,
    now: DateTime<Utc>,
) -> Result<bool> {
    let status = serde_json::to_string(status)?;
    let n = exec(
        tx,
        SET_STATUS,
        &[&key.kind.as_str(), &key.name, &i64_of(generation), &status, &now, &key.namespace],
    )
    .await?;
    Ok(n == 1)
}
