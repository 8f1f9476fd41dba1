//! The machine's limits other than spawning, taken in the same run as the workloads so the
//! figures can be judged as ratios: 1-row SQLite commits/s in WAL mode with
//! `synchronous=FULL` (the durability rota's server uses for acknowledged writes), and the
//! loopback HTTP round trip of one keep-alive connection to a real rota server.

use crate::cluster::BenchCluster;
use anyhow::{Context, Result};
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
    let sqlite = tokio::task::spawn_blocking(move || sqlite_full_commits(window)).await??;
    let http = http_round_trip(&args, window).await?;
    Ok(json!({"workload": "limits", "system": "machine", "sqlite_full_commits_per_s": sqlite,
        "http_rtt_us": http, "lost": 0, "duplicated": 0}))
}

/// One-row INSERT transactions into a WAL database with `synchronous=FULL`, on the same
/// file system as the bench's servers (the temp dir), for `window`.
fn sqlite_full_commits(window: Duration) -> Result<f64> {
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
    // Autocommit: each INSERT is its own transaction, so each pays one commit (and fsync).
    while start.elapsed() < window {
        stmt.execute([&payload[..]])?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
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
