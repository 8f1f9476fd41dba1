//! Reading a whole SQLite control plane for `rota migrate`: [`SqliteExporter`], the
//! [`Exporter`] of this backend. Opens both files read-only (never creating, migrating or
//! writing them) in one read transaction, and checks first that they are a rota database
//! at this build's schema. Owns no mapping of its own: the columns are
//! `rota_store::transfer::TABLES`.

use crate::SqliteStore;
use crate::error::SqliteError;
use crate::schema::{LOGS, MAIN, Migration};
use rota_store::transfer::{Exporter, Kind, Part, Row, Table, TransferError, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Rows per batch at most.
const BATCH_ROWS: usize = 500;
/// Bytes per batch at most (log chunks are large): a batch ends after passing this.
const BATCH_BYTES: u64 = 4 << 20;

/// A read-only view of a stopped SQLite control plane (the main file with its logs file
/// attached as `logs`).
pub struct SqliteExporter {
    conn: Connection,
    path: PathBuf,
}

fn sql(e: rusqlite::Error) -> TransferError {
    TransferError::Store(SqliteError::Sqlite(e).into())
}

impl SqliteExporter {
    /// Opens the database at `path` and `<path>.logs` read-only. Refuses files that are
    /// missing, not rota databases, or at another schema version than this build's.
    pub fn open(path: &Path) -> Result<Self, TransferError> {
        let logs = SqliteStore::logs_path_for(path);
        for p in [path, logs.as_path()] {
            if !p.is_file() {
                return Err(TransferError::NotARotaDatabase(format!("{}: no such file", p.display())));
            }
        }
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        // The logs file joins read-only too (a URI: ATTACH has no flags of its own).
        let uri = format!("file:{}?mode=ro", uri_path(&logs));
        conn.execute("ATTACH DATABASE ?1 AS logs", [&uri]).map_err(sql)?;
        let me = Self { conn, path: path.to_path_buf() };
        me.check_version("main", MAIN, path)?;
        me.check_version("logs", LOGS, &logs)?;
        // One snapshot of both files for the whole export.
        me.conn.execute_batch("BEGIN").map_err(sql)?;
        Ok(me)
    }

    /// The main database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_version(&self, schema: &str, set: &[Migration], file: &Path) -> Result<(), TransferError> {
        let not_rota = |why: &str| {
            TransferError::NotARotaDatabase(format!("{} is not a rota database ({why})", file.display()))
        };
        let has: bool = self
            .conn
            .query_row(
                &format!("SELECT count(*) > 0 FROM {schema}.sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| not_rota(&e.to_string()))?;
        if !has {
            return Err(not_rota("it has no schema_migrations table"));
        }
        let found: i64 = self
            .conn
            .query_row(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_migrations"),
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let known = set.last().map_or(0, |m| m.version);
        if found != known {
            let advice = if found < known {
                "start `rota server --database` on it once with this rota to upgrade it, stop it, then migrate"
            } else {
                "it was written by a newer rota; migrate with that one"
            };
            return Err(TransferError::NotARotaDatabase(format!(
                "{} has schema version {found}, this rota copies version {known}: {advice}",
                file.display()
            )));
        }
        Ok(())
    }

    /// Every column the source holds, per table, as `(table, column)` (tests compare them
    /// with `TABLES` and `SKIPPED`).
    pub fn source_columns(&self) -> Result<Vec<(String, String)>, TransferError> {
        let mut out = Vec::new();
        for schema in ["main", "logs"] {
            let mut tables = self
                .conn
                .prepare(&format!(
                    "SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name"
                ))
                .map_err(sql)?;
            let names: Vec<String> =
                tables.query_map([], |r| r.get(0)).map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?;
            for t in names {
                let mut cols = self
                    .conn
                    .prepare(&format!("SELECT name FROM pragma_table_info(?1, '{schema}')"))
                    .map_err(sql)?;
                let cs: Vec<String> = cols
                    .query_map([&t], |r| r.get(0))
                    .map_err(sql)?
                    .collect::<Result<_, _>>()
                    .map_err(sql)?;
                out.extend(cs.into_iter().map(|c| (t.clone(), c)));
            }
        }
        Ok(out)
    }
}

/// A path for a `file:` URI (characters that mean something there escaped).
fn uri_path(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            '?' | '#' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn schema_of(table: &Table) -> &'static str {
    match table.part {
        Part::Main => "main",
        Part::Logs => "logs",
    }
}

/// A column's value as it travels (see [`Kind`]).
fn value(kind: Kind, v: ValueRef<'_>, table: &Table, column: &str) -> Result<Value, TransferError> {
    let bad = || {
        TransferError::Store(
            SqliteError::Corrupt(format!("{}.{column}: unexpected {:?} value", table.name, v.data_type()))
                .into(),
        )
    };
    Ok(match (kind, v) {
        (_, ValueRef::Null) => Value::Null,
        (Kind::Int | Kind::Bool | Kind::Time, ValueRef::Integer(i)) => Value::Int(i),
        (Kind::Text | Kind::Json | Kind::TextList | Kind::Uuid, ValueRef::Text(t)) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|_| bad())?)
        }
        (Kind::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (Kind::Bytes, ValueRef::Text(t)) => Value::Bytes(t.to_vec()),
        _ => return Err(bad()),
    })
}

impl Exporter for SqliteExporter {
    fn count(&mut self, table: &'static Table) -> Result<u64, TransferError> {
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {}.{}", schema_of(table), table.name), [], |r| r.get(0))
            .map_err(sql)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn export(
        &mut self,
        table: &'static Table,
        sink: &mut dyn FnMut(Vec<Row>) -> Result<(), TransferError>,
    ) -> Result<(), TransferError> {
        let cols: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let query = format!(
            "SELECT {} FROM {}.{} ORDER BY {}",
            cols.join(", "),
            schema_of(table),
            table.name,
            table.order_by
        );
        let mut stmt = self.conn.prepare(&query).map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        let (mut batch, mut bytes) = (Vec::with_capacity(BATCH_ROWS), 0u64);
        while let Some(r) = rows.next().map_err(sql)? {
            let mut row = Vec::with_capacity(table.columns.len());
            for (i, c) in table.columns.iter().enumerate() {
                let v = value(c.kind, r.get_ref(i).map_err(sql)?, table, c.name)?;
                bytes += v.size();
                row.push(v);
            }
            batch.push(row);
            if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                sink(std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS)))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            sink(batch)?;
        }
        Ok(())
    }

    fn sequence_floor(&mut self, table: &'static Table) -> Result<i64, TransferError> {
        let Some(seq) = table.sequence else { return Ok(0) };
        let schema = schema_of(table);
        // AUTOINCREMENT remembers the highest id ever issued, also of pruned rows.
        let issued: Option<i64> = self
            .conn
            .query_row(
                &format!("SELECT MAX(seq) FROM {schema}.sqlite_sequence WHERE name = ?1"),
                [table.name],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let max: Option<i64> = self
            .conn
            .query_row(&format!("SELECT MAX({}) FROM {schema}.{}", seq.column, table.name), [], |r| r.get(0))
            .map_err(sql)?;
        Ok(issued.unwrap_or(0).max(max.unwrap_or(0)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rota_store::transfer::{SKIPPED, TABLES};

    /// Every table and column of the newest SQLite schema is either copied or listed as
    /// deliberately skipped: a migration that adds one fails here until `TABLES` (and the
    /// PostgreSQL schema) or `SKIPPED` says what becomes of it.
    #[test]
    fn every_sqlite_column_is_copied_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        drop(SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap());
        let exporter = SqliteExporter::open(&path).unwrap();
        let mut unmapped = Vec::new();
        for (t, c) in exporter.source_columns().unwrap() {
            let copied = TABLES.iter().any(|x| x.name == t && x.columns.iter().any(|y| y.name == c));
            let skipped = SKIPPED.iter().any(|(st, sc, _)| *st == t && (*sc == "*" || *sc == c));
            if !copied && !skipped {
                unmapped.push(format!("{t}.{c}"));
            }
        }
        assert!(unmapped.is_empty(), "columns neither copied nor skipped: {unmapped:?}");
        // And nothing copied is missing from the source.
        let cols = exporter.source_columns().unwrap();
        for t in TABLES {
            for c in t.columns {
                assert!(
                    cols.iter().any(|(a, b)| a == t.name && b == c.name),
                    "{}.{} not in SQLite",
                    t.name,
                    c.name
                );
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_rota_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let err = SqliteExporter::open(&path).err().expect("missing");
        assert!(err.to_string().contains("no such file"), "{err}");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        std::fs::write(SqliteStore::logs_path_for(&path), b"").unwrap();
        let err = SqliteExporter::open(&path).err().expect("not rota");
        assert!(err.to_string().contains("is not a rota database"), "{err}");
    }
}
