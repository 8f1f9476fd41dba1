//! The machine's limits other than spawning, taken in the same run as the workloads so the
//! figures can be judged as ratios: 1-row SQLite commits/s in WAL mode with
//! `synchronous=FULL` (the durability rota's server uses for acknowledged writes), rows/s
//! when 100 rows share each such commit (what a batching writer can reach), the same two on
//! PostgreSQL with `synchronous_commit` as the server has it (when `ROTA_TEST_POSTGRES_URL`
//! names one), and the loopback HTTP round trip of one keep-alive connection to a real rota
//! server.

use crate::cluster::BenchCluster;
use anyhow::{Context, Result};
use rota_testkit::postgres::{TestDb, URL_ENV};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of the limit probes.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build), whose server answers the HTTP probe.
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// How long each probe runs.
    #[arg(long, default_value = "3", value_name = "SECONDS")]
    pub(crate) seconds: f64,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    let window = Duration::from_secs_f64(args.seconds.max(0.2));
    let sqlite = tokio::task::spawn_blocking(move || sqlite_full_commits(window, 1)).await??;
    let sqlite_batched = tokio::task::spawn_blocking(move || sqlite_full_commits(window, BATCH)).await??;
    let postgres = if std::env::var_os(URL_ENV).is_some_and(|u| !u.is_empty()) {
        json!({"commits_per_s": pg_commits(window, 1).await?, "batched_rows_per_s": pg_commits(window, BATCH).await?})
    } else {
        Value::Null
    };
    let http = http_round_trip(&args, window).await?;
    Ok(json!({"workload": "limits", "system": "machine", "sqlite_full_commits_per_s": sqlite,
        "sqlite_full_batched_rows_per_s": sqlite_batched, "rows_per_batch": BATCH, "postgres": postgres,
        "http_rtt_us": http, "lost": 0, "duplicated": 0}))
}

/// Rows per transaction of the batched probes.
const BATCH: u64 = 100;

/// INSERT transactions of `rows` rows each into a WAL database with `synchronous=FULL`, on
/// the same file system as the bench's servers (the temp dir), for `window`: rows per second.
fn sqlite_full_commits(window: Duration, rows: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("probe.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )?;
    let mut stmt = conn.prepare("INSERT INTO t (v) VALUES (?1)")?;
    let payload = [7_u8; 64];
    let start = Instant::now();
    let mut n = 0_u64;
    // One transaction per `rows` INSERTs, so each batch pays one commit (and fsync); with
    // one row it is plain autocommit.
    while start.elapsed() < window {
        if rows > 1 {
            conn.execute_batch("BEGIN")?;
        }
        for _ in 0..rows {
            stmt.execute([&payload[..]])?;
        }
        if rows > 1 {
            conn.execute_batch("COMMIT")?;
        }
        n += rows;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The same on a PostgreSQL database of its own (dropped after), one connection, the
/// server's own `synchronous_commit`: rows per second.
async fn pg_commits(window: Duration, rows: u64) -> Result<f64> {
    let db = TestDb::create().await.context("no PostgreSQL database for the limits probe")?;
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    client.batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY, v bytea NOT NULL)").await?;
    let stmt = client.prepare("INSERT INTO t (v) VALUES ($1)").await?;
    let payload = vec![7_u8; 64];
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < window {
        if rows > 1 {
            client.batch_execute("BEGIN").await?;
        }
        for _ in 0..rows {
            client.execute(&stmt, &[&payload]).await?;
        }
        if rows > 1 {
            client.batch_execute("COMMIT").await?;
        }
        n += rows;
    }
    let per_s = n as f64 / start.elapsed().as_secs_f64();
    drop(client);
    // The connection ends with the client; the database is dropped with `db`.
    let _ = conn.await;
    Ok(per_s)
}

/// Sequential `GET /healthz` over one keep-alive connection: p50/p99 in microseconds and
/// requests per second.
async fn http_round_trip(args: &Args, window: Duration) -> Result<Value> {
    let cluster = BenchCluster::start(&args.rota).await?;
    // Warm the connection (and the server's code paths) first.
    for _ in 0..100 {
        cluster.client.healthz().await.context("warming /healthz")?;
    }
    let mut rtts = Vec::new();
    let start = Instant::now();
    while start.elapsed() < window {
        let t = Instant::now();
        cluster.client.healthz().await.context("/healthz")?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let per_s = rtts.len() as f64 / start.elapsed().as_secs_f64();
    rtts.sort_by(f64::total_cmp);
    let at = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    Ok(json!({"p50": at(0.5), "p99": at(0.99), "per_s": per_s}))
}
