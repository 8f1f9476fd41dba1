//! Which store the bench's servers run on (`rota-bench --backend sqlite|postgres`), and the
//! database of one measurement: a SQLite file in the run's temp dir, or a PostgreSQL
//! database of its own, made and dropped by the test kit's [`TestDb`] on the server that
//! `ROTA_TEST_POSTGRES_URL` names (never that URL's own database). It also reads what the
//! PostgreSQL rows report beside their figures: the server's durability settings, and the
//! size of every rota table for the soak. It must not start servers (that is `cluster`).

use anyhow::{Context, Result, bail};
use rota_testkit::Backend;
use rota_testkit::postgres::{TestDb, URL_ENV};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// The process's backend, set once by `main` from `--backend`: every server a workload
/// starts in this process uses it, so the workloads themselves need no flag of their own.
static BACKEND: OnceLock<Backend> = OnceLock::new();

/// `--backend`'s parser: the test kit's [`Backend`], by name.
pub(crate) fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" => Ok(Backend::Postgres),
        _ => Err(format!("{s}: expected sqlite or postgres")),
    }
}

pub(crate) fn set_backend(b: Backend) {
    // Set once, before any workload runs; a second set is a programming error we ignore.
    let _ = BACKEND.set(b);
}

pub(crate) fn backend() -> Backend {
    BACKEND.get().copied().unwrap_or(Backend::Sqlite)
}

/// The name the JSON uses for the backend.
pub(crate) fn backend_name() -> &'static str {
    match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// One measurement's database; a PostgreSQL one is dropped (connections ended) with it, so
/// it must outlive the server using it (fields drop after `Drop::drop` kills the server).
pub(crate) enum Database {
    Sqlite(std::path::PathBuf),
    Postgres(TestDb),
}

impl Database {
    /// A fresh database for a server whose data lives under `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        match backend() {
            Backend::Sqlite => Ok(Self::Sqlite(dir.join("rota.db"))),
            Backend::Postgres => {
                if std::env::var_os(URL_ENV).is_none_or(|u| u.is_empty()) {
                    bail!("--backend postgres: set {URL_ENV}=postgres://USER@HOST:PORT/DB (bench/run does)");
                }
                TestDb::create_blocking().map(Self::Postgres).context("no PostgreSQL database")
            }
        }
    }

    /// The value of `rota server --database`.
    pub(crate) fn arg(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(db) => db.url.clone(),
        }
    }

    /// The PostgreSQL URL, if it is one.
    pub(crate) fn pg_url(&self) -> Option<&str> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(db) => Some(&db.url),
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the bench's PostgreSQL database")?;
    tokio::spawn(conn);
    Ok(client)
}

/// The settings that decide what a PostgreSQL figure means: durability of a commit (a
/// submit is acknowledged after the WAL flush only with `synchronous_commit` on and `fsync`
/// on), whether autovacuum runs (table sizes), and the server's version. Read on the server
/// `ROTA_TEST_POSTGRES_URL` names; `None` on SQLite.
pub(crate) async fn pg_settings() -> Result<Option<Value>> {
    if backend() != Backend::Postgres {
        return Ok(None);
    }
    let url = std::env::var(URL_ENV).context(URL_ENV)?;
    let c = connect(&url).await?;
    let rows = c
        .query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', \
             'autovacuum', 'shared_buffers', 'max_connections', 'server_version', 'wal_level', \
             'full_page_writes') ORDER BY name",
            &[],
        )
        .await?;
    let mut out = serde_json::Map::new();
    for r in rows {
        out.insert(r.try_get(0)?, Value::String(r.try_get(1)?));
    }
    Ok(Some(Value::Object(out)))
}

/// Whether autovacuum runs on the server of `url`.
pub(crate) async fn autovacuum_on(url: &str) -> Result<bool> {
    let c = connect(url).await?;
    let on: String = c.query_one("SHOW autovacuum", &[]).await?.try_get(0)?;
    Ok(on == "on")
}

/// Plain `VACUUM` (not FULL: it takes no exclusive lock and returns no space to the OS, it
/// makes dead rows' space reusable, as autovacuum would) of the whole database; its seconds.
pub(crate) async fn vacuum(url: &str) -> Result<f64> {
    let c = connect(url).await?;
    let t = Instant::now();
    c.batch_execute("VACUUM").await.context("VACUUM")?;
    Ok(t.elapsed().as_secs_f64())
}

/// Every table of the database (`pg_stat_user_tables`): total size with indexes and TOAST
/// (`pg_total_relation_size`), heap, indexes (`pg_indexes_size`), live and dead rows; and
/// the sums, and the database's own size.
pub(crate) async fn table_sizes(url: &str) -> Result<Value> {
    let c = connect(url).await?;
    let rows = c
        .query(
            "SELECT relname::text, pg_total_relation_size(relid), pg_relation_size(relid), \
             pg_indexes_size(relid), n_live_tup, n_dead_tup FROM pg_stat_user_tables ORDER BY relname",
            &[],
        )
        .await?;
    let mut tables = serde_json::Map::new();
    let (mut total, mut heap, mut indexes, mut live, mut dead) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for r in rows {
        let (name, t, h, i, l, d): (String, i64, i64, i64, i64, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?);
        total += t;
        heap += h;
        indexes += i;
        live += l;
        dead += d;
        tables.insert(name, json!({"total": t, "heap": h, "indexes": i, "live_rows": l, "dead_rows": d}));
    }
    let database: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).await?.try_get(0)?;
    Ok(json!({
        "total": total, "heap": heap, "indexes": indexes, "live_rows": live, "dead_rows": dead,
        "database": database, "tables": tables,
    }))
}
