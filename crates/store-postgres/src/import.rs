//! Writing a whole control plane copied from another backend (`rota migrate`):
//! [`PgImporter`], the [`Importer`] of this backend. Everything goes in one transaction on
//! one connection, which first locks every copied table and refuses a database holding any
//! row: a copy that fails, or whose process is killed, leaves the database as it was
//! (PostgreSQL rolls back a transaction whose connection closed). Rows are written by
//! batched multi-row INSERTs with typed parameters; the id sequences are advanced past
//! every id the source ever issued. Owns no mapping: the columns are
//! `rota_store::transfer::TABLES`, whose names this schema shares.

use crate::PgStore;
use crate::error::PgError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_store::transfer::{Importer, Kind, Row, TABLES, Table, TransferError, Value};
use tokio_postgres::types::ToSql;

/// PostgreSQL's limit on parameters per statement.
const MAX_PARAMS: usize = 65_535;

/// Held by a copy (an arbitrary constant: "rota" + 2), so two copies into one database
/// never interleave.
const IMPORT_LOCK: i64 = 0x726f_7461_0002;

/// Writes copied rows into one transaction of a [`PgStore`]'s database.
pub struct PgImporter {
    client: deadpool_postgres::Object,
    /// The database as shown to people (never with a password).
    shown: String,
    open: bool,
}

impl PgStore {
    /// An importer on a connection of its own; `shown` names the database in messages
    /// (host:port/db, without a password).
    pub async fn importer(&self, shown: &str) -> Result<PgImporter, PgError> {
        Ok(PgImporter { client: self.pool.get().await?, shown: shown.to_string(), open: false })
    }
}

fn pg(e: tokio_postgres::Error) -> TransferError {
    TransferError::Store(PgError::Postgres(e).into())
}

fn corrupt(table: &Table, column: &str, why: impl std::fmt::Display) -> TransferError {
    TransferError::Store(PgError::Corrupt(format!("{}.{column}: {why}", table.name)).into())
}

/// The SQL type a kind is bound as.
fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Int => "bigint",
        Kind::Bool => "boolean",
        Kind::Time => "timestamptz",
        Kind::Json => "jsonb",
        Kind::TextList => "text[]",
        Kind::Uuid => "uuid",
        Kind::Bytes => "bytea",
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// A value as a parameter of its column's SQL type (NULL typed too).
fn param(kind: Kind, v: Value, table: &Table, column: &str) -> Result<Param, TransferError> {
    let bad = |why: &dyn std::fmt::Display| corrupt(table, column, why);
    Ok(match (kind, v) {
        (Kind::Text, Value::Null) => Box::new(None::<String>),
        (Kind::Int, Value::Null) => Box::new(None::<i64>),
        (Kind::Bool, Value::Null) => Box::new(None::<bool>),
        (Kind::Time, Value::Null) => Box::new(None::<DateTime<Utc>>),
        (Kind::Json, Value::Null) => Box::new(None::<serde_json::Value>),
        (Kind::TextList, Value::Null) => Box::new(None::<Vec<String>>),
        (Kind::Uuid, Value::Null) => Box::new(None::<uuid::Uuid>),
        (Kind::Bytes, Value::Null) => Box::new(None::<Vec<u8>>),
        (Kind::Text, Value::Text(s)) => Box::new(Some(s)),
        (Kind::Int, Value::Int(i)) => Box::new(Some(i)),
        (Kind::Bool, Value::Int(i)) => Box::new(Some(i != 0)),
        (Kind::Time, Value::Int(ms)) => Box::new(Some(
            DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| bad(&format!("time {ms} ms")))?,
        )),
        (Kind::Json, Value::Text(s)) => {
            Box::new(Some(serde_json::from_str::<serde_json::Value>(&s).map_err(|e| bad(&e))?))
        }
        (Kind::TextList, Value::Text(s)) => {
            Box::new(Some(serde_json::from_str::<Vec<String>>(&s).map_err(|e| bad(&e))?))
        }
        (Kind::Uuid, Value::Text(s)) => Box::new(Some(s.parse::<uuid::Uuid>().map_err(|e| bad(&e))?)),
        (Kind::Bytes, Value::Bytes(b)) => Box::new(Some(b)),
        (k, v) => return Err(bad(&format!("a {k:?} column cannot hold {v:?}"))),
    })
}

/// `INSERT INTO t (a, b) VALUES ($1::text, $2::bigint), (…)` for `rows` rows.
fn insert_sql(table: &Table, rows: usize) -> String {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    let mut sql = format!("INSERT INTO {} ({}) VALUES ", table.name, names.join(", "));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (i, c) in table.columns.iter().enumerate() {
            n += 1;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${n}::{}", sql_type(c.kind)));
        }
        sql.push(')');
    }
    sql
}

#[async_trait]
impl Importer for PgImporter {
    async fn begin(&mut self) -> Result<(), TransferError> {
        // No statement timeout: one INSERT of a batch of large log chunks may take a while.
        self.client
            .batch_execute("BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10s'")
            .await
            .map_err(pg)?;
        self.open = true;
        self.client.execute("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK]).await.map_err(pg)?;
        // Servers started on this database meanwhile wait until the copy commits (or fails).
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        self.client
            .batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", names.join(", ")))
            .await
            .map_err(pg)?;
        let mut held = Vec::new();
        for t in TABLES {
            let n: i64 = self
                .client
                .query_one(&format!("SELECT count(*) FROM {}", t.name), &[])
                .await
                .map_err(pg)?
                .get(0);
            if n > 0 {
                held.push(format!("{} {}", n, t.name));
            }
        }
        if !held.is_empty() {
            return Err(TransferError::TargetNotEmpty(format!(
                "the PostgreSQL database {} is not empty (it holds {}): rota migrate copies into an \
                 empty database only; create a new one (CREATE DATABASE …) or empty this one",
                self.shown,
                held.join(", ")
            )));
        }
        Ok(())
    }

    async fn write(&mut self, table: &'static Table, rows: Vec<Row>) -> Result<(), TransferError> {
        let per_statement = (MAX_PARAMS / table.columns.len().max(1)).max(1);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut params: Vec<Param> = Vec::new();
            let mut n = 0;
            for row in rows.by_ref().take(per_statement) {
                if row.len() != table.columns.len() {
                    return Err(corrupt(table, "*", format!("a row of {} values", row.len())));
                }
                for (c, v) in table.columns.iter().zip(row) {
                    params.push(param(c.kind, v, table, c.name)?);
                }
                n += 1;
            }
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            self.client.execute(&insert_sql(table, n), &refs).await.map_err(pg)?;
        }
        Ok(())
    }

    async fn advance_sequence(&mut self, table: &'static Table, floor: i64) -> Result<(), TransferError> {
        let Some(seq) = table.sequence else { return Ok(()) };
        let max: Option<i64> = self
            .client
            .query_one(&format!("SELECT MAX({}) FROM {}", seq.column, table.name), &[])
            .await
            .map_err(pg)?
            .get(0);
        let last = floor.max(max.unwrap_or(0));
        if last > 0 {
            // The next id handed out is last + 1.
            self.client
                .execute("SELECT setval($1::text::regclass, $2, true)", &[&seq.target, &last])
                .await
                .map_err(pg)?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), TransferError> {
        self.client.batch_execute("COMMIT").await.map_err(pg)?;
        self.open = false;
        Ok(())
    }

    async fn rollback(&mut self) {
        if std::mem::take(&mut self.open)
            && let Err(e) = self.client.batch_execute("ROLLBACK").await
        {
            tracing::warn!(error = %e, "rollback of the copy failed; the connection closing rolls it back");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rota_testkit::postgres::TestDb;

    /// Every copied column exists in the PostgreSQL schema under the same name, and every
    /// column of the copied tables there is copied (a new one must be mapped, or it would
    /// silently take its default).
    #[tokio::test]
    async fn every_copied_column_exists_here_and_every_column_here_is_copied() {
        let Some(db) = TestDb::create().await else { return };
        let store =
            PgStore::connect(&db.url, crate::PgOptions { pool_size: 1, ..Default::default() }).await.unwrap();
        let client = store.pool.get().await.unwrap();
        for t in TABLES {
            let rows = client
                .query(
                    "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
                    &[&t.name],
                )
                .await
                .unwrap();
            let here: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert!(!here.is_empty(), "no table {} on PostgreSQL", t.name);
            for c in t.columns {
                assert!(here.iter().any(|h| h == c.name), "{}.{} is not on PostgreSQL", t.name, c.name);
            }
            for h in &here {
                assert!(t.columns.iter().any(|c| c.name == h), "{}.{h} on PostgreSQL is not copied", t.name);
            }
        }
    }

    #[test]
    fn insert_numbers_parameters_across_rows() {
        let t = TABLES.iter().find(|t| t.name == "paused_queues").unwrap();
        assert_eq!(
            insert_sql(t, 2),
            "INSERT INTO paused_queues (namespace, queue, paused_at) VALUES ($1::text, $2::text, $3::timestamptz), \
             ($4::text, $5::text, $6::timestamptz)"
        );
    }
}
