//! The `resources` table (migration 7): declared resources, applied and deleted in batches
//! that are one savepoint each (all or nothing). What an apply does to a row comes from
//! `rota_domain::resource::apply`; nothing here validates a spec.

use crate::codec::{from_json, ms, time, to_json};
use crate::error::Result;
use chrono::{DateTime, Utc};
use rota_domain::resource::{self, Applied, Kind, Metadata, Status};
use rota_store::resources::{AppliedResource, ResourceKey, ResourceRecord, ResourceWrite, check_distinct};
use rusqlite::{Connection, OptionalExtension, Row};

const COLUMNS: &str = "kind, name, labels, generation, spec, status, created_at, updated_at, namespace";

const UPSERT: &str = "INSERT INTO resources (kind, name, labels, generation, spec, status, created_at, updated_at, \
     namespace) VALUES (?1, ?2, ?3, ?4, ?5, '{}', ?6, ?6, ?7) \
     ON CONFLICT (kind, namespace, name) DO UPDATE SET labels = excluded.labels, generation = excluded.generation, \
        spec = excluded.spec, updated_at = excluded.updated_at";

const DELETE: &str = "DELETE FROM resources WHERE kind = ?1 AND namespace = ?3 AND name = ?2";

const SET_STATUS: &str = "UPDATE resources SET status = ?4, updated_at = ?5 WHERE kind = ?1 AND namespace = ?6 \
     AND name = ?2 AND generation = ?3";

/// A row as read: kind, name, labels, generation, spec, status, created, updated, namespace.
type RawRow = (String, String, String, i64, String, String, i64, i64, String);

fn record(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn decode(row: RawRow) -> Result<ResourceRecord> {
    let (kind, name, labels, generation, spec, status, created, updated, namespace) = row;
    let kind =
        Kind::parse(&kind).map_err(|e| rota_store::StoreError::Invalid(format!("stored resource: {e}")))?;
    Ok(ResourceRecord {
        kind,
        metadata: Metadata { name, namespace, labels: from_json(&labels)? },
        generation: u64::try_from(generation).unwrap_or(0),
        spec,
        status: from_json(&status)?,
        created_at: time(created)?,
        updated_at: time(updated)?,
    })
}

fn get(conn: &Connection, key: &ResourceKey) -> Result<Option<ResourceRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND namespace = ?3 AND name = ?2");
    let row = conn
        .prepare_cached(&sql)?
        .query_row((key.kind.as_str(), &key.name, &key.namespace), record)
        .optional()?;
    row.map(decode).transpose()
}

/// Creates or updates every write (the caller's savepoint makes them one change).
pub(crate) fn apply(
    conn: &Connection,
    writes: &[ResourceWrite],
    now: DateTime<Utc>,
) -> Result<Vec<AppliedResource>> {
    check_distinct(writes.iter().map(ResourceWrite::key))?;
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let old = get(conn, &w.key())?;
        let previous = old.as_ref().map(|o| resource::Stored {
            kind: o.kind,
            metadata: o.metadata.clone(),
            generation: o.generation,
            spec: o.spec.clone(),
            status: Status::default(),
        });
        let (next, applied) = resource::apply(w.kind, previous, w.metadata.clone(), w.spec.clone());
        if applied != Applied::Unchanged {
            conn.prepare_cached(UPSERT)?.execute((
                w.kind.as_str(),
                &w.metadata.name,
                to_json(&next.metadata.labels)?,
                i64::try_from(next.generation).unwrap_or(i64::MAX),
                &next.spec,
                ms(now),
                &w.metadata.namespace,
            ))?;
        }
        out.push(AppliedResource { applied, generation: next.generation, previous: old });
    }
    Ok(out)
}

/// Deletes every key; per key, whether it existed.
pub(crate) fn delete(conn: &Connection, keys: &[ResourceKey]) -> Result<Vec<bool>> {
    check_distinct(keys.iter().cloned())?;
    let mut st = conn.prepare_cached(DELETE)?;
    keys.iter().map(|k| Ok(st.execute((k.kind.as_str(), &k.name, &k.namespace))? == 1)).collect()
}

/// One resource.
pub(crate) fn get_one(conn: &Connection, key: &ResourceKey) -> Result<Option<ResourceRecord>> {
    get(conn, key)
}

/// A page of the resources of `kind` in `namespace` (`None`: every namespace): (namespace,
/// name) after `after` (if given), at most `limit`, by namespace then name. SQLite's default
/// BINARY collation is byte order, as PostgreSQL's `"C"` is, so one cursor means the same on
/// both. No cursor is `('', '')`, before every key (names are never empty), so one plain
/// range on the primary key serves every page.
pub(crate) fn list(
    conn: &Connection,
    kind: Kind,
    namespace: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> Result<Vec<ResourceRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND (?5 IS NULL OR namespace = ?5) \
         AND (namespace, name) > (?2, ?3) ORDER BY namespace, name LIMIT ?4"
    );
    let (after_ns, after_name) = after.unwrap_or(("", ""));
    let rows = conn
        .prepare_cached(&sql)?
        .query_map((kind.as_str(), after_ns, after_name, i64::from(limit), namespace), record)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(decode).collect()
}

/// Records a status observed at `generation`; false if the resource is gone or moved on.
pub(crate) fn set_status(
    conn: &Connection,
    key: &ResourceKey,
    generation: u64,
    status: &Status,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = conn.prepare_cached(SET_STATUS)?.execute((
        key.kind.as_str(),
        &key.name,
        i64::try_from(generation).unwrap_or(i64::MAX),
        to_json(status)?,
        ms(now),
        &key.namespace,
    ))?;
    Ok(n == 1)
}
