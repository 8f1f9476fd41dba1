//! `submit-rate`: jobs the API accepts per second with no worker running, one job per
//! request (`--mode single`) or `--batch` per request (`--mode batch`), from `--clients`
//! concurrent closed-loop clients until `--jobs` were sent. Every submit is the durable
//! kind (a 201 means fsynced). This module owns the load generator, the per-request
//! latencies and the check that the server then holds exactly N queued jobs.

use crate::cluster::BenchCluster;
use crate::probes::shell_job;
use anyhow::{Context, Result, bail};
use rota_domain::{JobId, JobSpec};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One job per request, or batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// `POST /api/v1/jobs`, one job each.
    Single,
    /// `POST /api/v1/jobs/batch`, `--batch` jobs each.
    Batch,
}

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// single or batch.
    #[arg(long, value_enum, default_value = "single")]
    pub(crate) mode: Mode,
    /// Concurrent clients, each with its own connection, each sending its next request
    /// when the previous one was answered.
    #[arg(long, default_value_t = 8)]
    pub(crate) clients: u32,
    /// Jobs to submit in total.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) jobs: u32,
    /// Jobs per request in batch mode.
    #[arg(long, default_value_t = 100)]
    pub(crate) batch: u32,
}

/// What one client saw.
#[derive(Default)]
struct ClientRun {
    /// Seconds per request.
    latencies: Vec<f64>,
    /// Ids the server acknowledged as newly created.
    ids: Vec<JobId>,
    /// Requests or batch entries that were refused.
    refused: u64,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    if args.clients == 0 || args.jobs == 0 || args.batch == 0 {
        bail!("--clients, --jobs and --batch must be at least 1");
    }
    let c = BenchCluster::start(&args.rota).await?;
    // Each client gets its own connection pool, as separate submitters would; the admin
    // token is read where the server wrote it (BenchCluster does the same).
    let admin = std::fs::read_to_string(c.dir.path().join("data/rota/admin.token")).context("admin.token")?;
    let per_request = match args.mode {
        Mode::Single => 1,
        Mode::Batch => args.batch,
    };
    let jobs = u64::from(args.jobs);
    let next = Arc::new(AtomicU64::new(0));
    let server_before = c.server_cpu()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let client = c.operator_client(admin.trim().to_string())?;
        let next = next.clone();
        let mode = args.mode;
        tasks.push(tokio::spawn(async move {
            let mut me = ClientRun::default();
            let template: Vec<JobSpec> = (0..per_request).map(|_| shell_job("true")).collect();
            loop {
                // Claim this request's share of the N jobs; the last request may be short.
                let from = next.fetch_add(u64::from(per_request), Ordering::SeqCst);
                if from >= jobs {
                    break;
                }
                let n = (jobs - from).min(u64::from(per_request)) as usize;
                let t0 = Instant::now();
                match mode {
                    Mode::Single => match client.submit(&template[0], None).await {
                        Ok(r) if r.created => me.ids.push(r.id),
                        Ok(_) | Err(_) => me.refused += 1,
                    },
                    Mode::Batch => match client.submit_batch(&template[..n]).await {
                        Ok(r) => {
                            for item in r.results {
                                match item.result {
                                    Some(s) if item.status == 201 => me.ids.push(s.id),
                                    _ => me.refused += 1,
                                }
                            }
                        }
                        Err(_) => me.refused += n as u64,
                    },
                }
                me.latencies.push(t0.elapsed().as_secs_f64());
            }
            me
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.context("submit client panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    let server_cpu = c.server_cpu()?.own - server_before.own;

    let mut latencies: Vec<f64> = runs.iter().flat_map(|r| r.latencies.iter().map(|s| s * 1000.0)).collect();
    latencies.sort_by(f64::total_cmp);
    let acknowledged: Vec<JobId> = runs.iter().flat_map(|r| r.ids.iter().copied()).collect();
    let distinct = acknowledged.iter().collect::<HashSet<_>>().len() as u64;
    let refused: u64 = runs.iter().map(|r| r.refused).sum();

    // What the server holds, from its own records: the queue's ready steps (one step per
    // job, and nothing claims them) and its submit counter.
    let queues = c.client.list_queues().await?.queues;
    let stored: u64 = queues.iter().filter(|q| q.queue == "default").map(|q| q.ready + q.running).sum();
    let submitted = c.metric("rota_jobs_submitted_total").await?;
    let requests = latencies.len();
    Ok(json!({
        "workload": "submit-rate", "system": "rota",
        "mode": match args.mode { Mode::Single => "single", Mode::Batch => "batch" },
        "clients": args.clients, "jobs": args.jobs, "batch": per_request,
        "seconds": secs, "per_s": jobs as f64 / secs, "requests": requests,
        "requests_per_s": requests as f64 / secs,
        "request_latency_ms": {
            "p50": pct(&latencies, 0.5), "p99": pct(&latencies, 0.99), "max": pct(&latencies, 1.0),
        },
        "server_cpu_ms_per_job": (server_cpu * 1e6 / jobs as f64).round() / 1000.0,
        "acknowledged": acknowledged.len(), "refused": refused,
        "stored_queued": stored, "jobs_submitted_metric": submitted,
        "lost": jobs.saturating_sub(stored),
        "duplicated": stored.saturating_sub(jobs).max(acknowledged.len() as u64 - distinct),
    }))
}

/// The `p` quantile of sorted samples (nearest rank).
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
