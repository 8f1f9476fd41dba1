//! `soak` (run by `--full` only): does rota hold up over time and at scale? This module owns
//! three parts, each on a fresh server, and the exactly-once checks of each:
//! - `soak`: `--minutes` of open-loop `true` jobs at `--rate` (default 70% of a burn-down
//!   measured first) against one worker; completions per interval, backlog, RSS and the
//!   database files over time (on PostgreSQL: every table's and index's size, live and dead
//!   rows), and whether `--retention` pruning bounded them;
//! - `claim-depth`: the latency of one claim by a synthetic protocol client
//!   (`WorkerClient`) with `--shallow` and with `--deep` jobs queued;
//! - `memory`: an idle worker's RSS, and the server's RSS with `--finished` finished jobs
//!   stored (finished cheaply by synthetic clients that claim and complete in bulk).
//!
//! Every size is a flag, so a short run (`--minutes 1 --deep 100000 --finished 100000`)
//! checks the machinery; `--fill-budget-secs` caps the time spent queueing so the report
//! names the depth actually reached.

use crate::cluster::{BenchCluster, rss_bytes, worker_rss_bytes};
use crate::probes::shell_job;
use crate::store::{self, Database};
use anyhow::{Context, Result, bail};
use rota_api_types::jobs::ListJobsQuery;
use rota_api_types::worker::{
    ClaimRequest, CompleteBatchRequest, CompleteItem, HeartbeatRequest, RegisterRequest,
};
use rota_client::{Client, WorkerClient};
use rota_domain::{AttemptOutcome, JobSpec, PROTOCOL_VERSION};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Parts to run (comma-separated): soak, claim-depth, memory.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "soak,claim-depth,memory")]
    pub(crate) parts: Vec<Part>,
    /// Soak length, in sampling intervals.
    #[arg(long, default_value_t = 10)]
    pub(crate) minutes: u32,
    /// Length of one sampling interval ("minute"), seconds; shorter only for quick checks.
    #[arg(long, default_value_t = 60)]
    pub(crate) interval_secs: u64,
    /// Offered jobs per second; default: 70% of a burn-down of `--calibrate-jobs` measured first.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Jobs of the calibrating burn-down.
    #[arg(long, default_value_t = 5000)]
    pub(crate) calibrate_jobs: u32,
    /// The soak worker's (and the idle worker's) concurrency.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: u32,
    /// `rota server --retention` for the soak (finished jobs older than this are prunable).
    #[arg(long, default_value = "1m")]
    pub(crate) retention: String,
    /// After the soak, restart the server once: it prunes at start, which shows what
    /// retention does to the files when the sweeper's prune finally runs.
    /// SQLite only: on PostgreSQL the leader prunes while the server runs.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) prune_check: bool,
    /// PostgreSQL: run a plain `VACUUM` after each interval's sample. `auto` does so only
    /// when the server's autovacuum is off (CI's PostgreSQL turns it off for speed), standing
    /// in for the autovacuum any production server runs; the JSON says which happened.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) vacuum: Vacuum,
    /// Claim depth: the shallow queue.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) shallow: u64,
    /// Claim depth: the deep queue (reached as far as `--fill-budget-secs` allows).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) deep: u64,
    /// Claims timed at each depth.
    #[arg(long, default_value_t = 50)]
    pub(crate) claim_samples: u32,
    /// Memory: finished jobs stored before the server's RSS is read.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) finished: u64,
    /// Synthetic clients finishing jobs in bulk (each submits, claims and completes 1000 at a time).
    #[arg(long, default_value_t = 2)]
    pub(crate) fill_clients: u32,
    /// Most seconds spent queueing (deep) or finishing (memory) jobs; the count reached is reported.
    #[arg(long, default_value_t = 1200)]
    pub(crate) fill_budget_secs: u64,
}

/// When the PostgreSQL soak vacuums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Vacuum {
    Auto,
    Always,
    Never,
}

/// The parts of this workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum Part {
    Soak,
    ClaimDepth,
    Memory,
}

/// Jobs per batch call (submit, claim, complete) when filling.
const BATCH: u64 = 1000;
/// A drain or wait is abandoned past this.
const WAIT_LIMIT: Duration = Duration::from_secs(600);
const MIB: u64 = 1 << 20;

pub(crate) async fn run(args: Args) -> Result<Value> {
    let mut out = json!({"workload": "soak", "system": "rota"});
    let (mut lost, mut duplicated) = (0, 0);
    let mut seen = HashSet::new();
    for &part in &args.parts {
        if !seen.insert(part) {
            continue;
        }
        let (name, v) = match part {
            Part::Soak => ("soak", soak(&args).await?),
            Part::ClaimDepth => ("claim_depth", claim_depth(&args).await?),
            Part::Memory => ("memory", memory(&args).await?),
        };
        lost += v["lost"].as_u64().unwrap_or(0);
        duplicated += v["duplicated"].as_u64().unwrap_or(0);
        out[name] = v;
    }
    out["lost"] = json!(lost);
    out["duplicated"] = json!(duplicated);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// soak

/// Submit outcomes of the open-loop generator.
#[derive(Default)]
struct Offered {
    ok: AtomicU64,
    refused: AtomicU64,
    in_flight: AtomicU64,
}

async fn soak(args: &Args) -> Result<Value> {
    let (rate, calibration) = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => (r, Value::Null),
        Some(_) => bail!("--rate must be a positive number"),
        None => {
            let b = crate::probes::burn_down(&args.rota, args.calibrate_jobs, args.concurrency, None).await?;
            if b["lost"].as_u64() != Some(0) || b["duplicated"].as_u64() != Some(0) {
                bail!("the calibrating burn-down was not exactly-once: {b}");
            }
            let per_s = b["per_s"].as_f64().context("burn-down rate")?;
            (0.7 * per_s, json!({"burn_down_jobs": args.calibrate_jobs, "burn_down_per_s": per_s}))
        }
    };
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path())?;
    let server = Server::start(&args.rota, dir.path(), &db, &args.retention).await?;
    let vacuum_each = match (db.pg_url(), args.vacuum) {
        (None, _) | (_, Vacuum::Never) => false,
        (Some(_), Vacuum::Always) => true,
        (Some(url), Vacuum::Auto) => !store::autovacuum_on(url).await?,
    };
    if let (Some(url), true) = (db.pg_url(), vacuum_each) {
        // Once before the load: the first VACUUM creates each table's free-space and
        // visibility maps, which would otherwise show as growth between minute 1 and 2.
        store::vacuum(url).await?;
    }
    let files_start = db_size(&db).await?;
    let mut workers = Workers::default();
    let worker_pid = workers.launch(&args.rota, dir.path(), &server, "soak", args.concurrency, &[])?;
    wait_registered(&server.client, "soak").await?;
    let worker_rss_idle = worker_rss_bytes(worker_pid);

    let offered = Arc::new(Offered::default());
    let interval = Duration::from_secs(args.interval_secs.max(1));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let total = (rate * interval.as_secs_f64() * f64::from(args.minutes)).round() as u64;
    let generator = tokio::spawn(open_loop(server.client.clone(), rate, total, start, offered.clone()));

    let mut minutes = Vec::new();
    let (mut last_done, mut last_sub) = (0u64, 0u64);
    for k in 1..=args.minutes {
        tokio::time::sleep_until(start + interval * k).await;
        let done = metric(&server.client, "rota_attempts_completed_total").await?;
        let sub = offered.ok.load(Ordering::SeqCst);
        let size = db_size(&db).await?;
        // After the sample, so each minute shows what accumulated since the last vacuum.
        let vacuum_s = match db.pg_url() {
            Some(url) if vacuum_each => Some(store::vacuum(url).await?),
            _ => None,
        };
        minutes.push(json!({
            "minute": k, "completed": done - last_done,
            "per_s": (done - last_done) as f64 / interval.as_secs_f64(),
            "submitted": sub - last_sub, "backlog": sub.saturating_sub(done),
            "worker_rss_mib": worker_rss_bytes(worker_pid).map(|b| b / MIB),
            "server_rss_mib": rss_bytes(server.pid()).map(|b| b / MIB),
            "db_bytes": size["total"], "sizes": size, "vacuum_s": vacuum_s,
        }));
        (last_done, last_sub) = (done, sub);
    }
    generator.await.context("generator panicked")?;
    let until = Instant::now() + WAIT_LIMIT;
    while offered.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let submitted = offered.ok.load(Ordering::SeqCst);
    let backlog_at_end = submitted.saturating_sub(last_done);
    let drain_start = Instant::now();
    let completed = wait_metric(&server.client, "rota_attempts_completed_total", submitted).await?;
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let files_end = db_size(&db).await?;
    let claimed = metric(&server.client, "rota_attempts_claimed_total").await?;
    let attempts_lost = metric(&server.client, "rota_attempts_lost_total").await?;
    let not_succeeded = not_succeeded(&server.client).await?;
    let worker_rss_end = worker_rss_bytes(worker_pid);
    let prunes_seen = server.prunes();

    let per_s = |m: &Value| m["per_s"].as_f64().unwrap_or(f64::NAN);
    let first = minutes.first().map_or(f64::NAN, per_s);
    let last = minutes.last().map_or(f64::NAN, per_s);
    let growth = size_growth(&minutes);

    // Retention only runs in the sweeper's prune, at start and then hourly: restart the
    // server (after its workers) so the prune runs once, and see what it leaves on disk.
    let after_restart = if args.prune_check && db.pg_url().is_none() {
        drop(workers);
        server.stop()?;
        // Let every finished job age past the retention before the restarted server looks.
        let wait = humantime_secs(&args.retention).unwrap_or(60).min(600);
        tokio::time::sleep(Duration::from_secs(wait + 1)).await;
        let again = Server::start(&args.rota, dir.path(), &db, &args.retention).await?;
        let pruned = again.wait_prune(Duration::from_secs(60)).await;
        let v = json!({"pruned_jobs": pruned, "files": db_size(&db).await?, "waited_s": wait + 1});
        again.stop()?;
        v
    } else {
        drop(workers);
        drop(server);
        Value::Null
    };

    Ok(json!({
        "rate": rate, "calibration": calibration, "interval_s": interval.as_secs(), "intervals": args.minutes,
        "concurrency": args.concurrency, "retention": args.retention,
        "offered": total, "submitted": submitted, "refused": offered.refused.load(Ordering::SeqCst),
        "per_interval": minutes,
        "per_s_first": first, "per_s_last": last, "last_vs_first": last / first,
        // Whether the server kept up at all: a slow first minute makes last ÷ first look good
        // while the backlog grows.
        "last_vs_offered": last / rate,
        "backlog_at_end": backlog_at_end, "drain_s": drain_secs,
        "worker_rss_mib": {"idle": worker_rss_idle.map(|b| b / MIB), "end": worker_rss_end.map(|b| b / MIB)},
        "files_start": files_start, "files_end": files_end, "size_growth": growth,
        "vacuum_each_interval": vacuum_each,
        // `prune_runs` counts the prune passes that deleted something while the server ran
        // (every tenth of the retention, at least 5 s apart).
        "prune_runs_during_soak": prunes_seen.len(), "pruned_during_soak": prunes_seen.iter().sum::<u64>(),
        "after_restart_prune": after_restart,
        "attempts_claimed": claimed, "completions": completed, "attempts_lost": attempts_lost,
        "not_succeeded": not_succeeded,
        "lost": submitted.saturating_sub(completed).max(not_succeeded),
        "duplicated": completed.saturating_sub(submitted).max(claimed.saturating_sub(submitted)),
    }))
}

/// Submits `total` jobs at `rate` from `start`, each in its own task (open loop).
async fn open_loop(
    client: Client,
    rate: f64,
    total: u64,
    start: tokio::time::Instant,
    offered: Arc<Offered>,
) {
    let job = shell_job("true");
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (client, job, offered) = (client.clone(), job.clone(), offered.clone());
        offered.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            match client.submit(&job, None).await {
                Ok(r) if r.created => offered.ok.fetch_add(1, Ordering::SeqCst),
                _ => offered.refused.fetch_add(1, Ordering::SeqCst),
            };
            offered.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Seconds of a simple duration (`90s`, `1m`, `2h`, `1d`), for the prune wait.
fn humantime_secs(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    })
}

/// A `rota server` with flags `BenchCluster` does not pass (`--retention`), on a database
/// in `dir` that outlives it (so it can be restarted). Killed on drop.
struct Server {
    proc: rota_testkit::Proc,
    url: String,
    join_token: String,
    client: Client,
    /// Jobs deleted by each prune pass the server logged.
    prunes: Arc<Mutex<Vec<u64>>>,
}

impl Server {
    async fn start(rota: &Path, dir: &Path, db: &Database, retention: &str) -> Result<Self> {
        let prunes: Arc<Mutex<Vec<u64>>> = Arc::default();
        let seen = prunes.clone();
        // Files the prune passes the server logs: `... pruned finished jobs past retention pruned=N`.
        let on_line = move |line: &str| {
            if line.contains("pruned finished jobs")
                && let Some(n) = line.split("pruned=").nth(1).and_then(|v| v.split_whitespace().next())
            {
                seen.lock().unwrap_or_else(PoisonError::into_inner).push(n.parse().unwrap_or(0));
            }
        };
        let (rota, dir, retention) = (rota.to_path_buf(), dir.to_path_buf(), retention.to_string());
        let database = db.arg();
        let sp = tokio::task::spawn_blocking(move || {
            crate::cluster::spawn_server(&rota, &dir, &database, &["--retention", &retention], on_line)
        })
        .await??;
        let client = Client::new(&sp.url, Some(sp.admin))?;
        Ok(Self { proc: sp.proc, url: sp.url, join_token: sp.join_token, client, prunes })
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    fn prunes(&self) -> Vec<u64> {
        self.prunes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for the first prune pass that deleted something; the jobs it deleted (0 if none
    /// was logged within `limit`).
    async fn wait_prune(&self, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(n) = self.prunes().first() {
                return *n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        0
    }

    /// SIGTERM (a clean shutdown checkpoints the WAL), then KILL if it lingers.
    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.proc.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.proc.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc.child.kill()?;
        self.proc.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            let _ = self.proc.child.kill();
            let _ = self.proc.child.wait();
        }
    }
}

/// Workers of a [`Server`]; killed on drop.
#[derive(Default)]
struct Workers(Vec<Child>);

impl Workers {
    /// Launches `rota worker run` named `name`; returns its pid.
    fn launch(
        &mut self,
        rota: &Path,
        dir: &Path,
        server: &Server,
        name: &str,
        concurrency: u32,
        extra: &[&str],
    ) -> Result<u32> {
        let child = Command::new(rota)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("ROTA_LOG", "warn")
            .args([
                "worker",
                "run",
                "--server",
                &server.url,
                "--join-token",
                &server.join_token,
                "--name",
                name,
            ])
            .args(["--concurrency", &concurrency.to_string(), "--workspace"])
            .arg(dir.join(format!("ws-{name}")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting rota worker")?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The size of the server's database: its files on SQLite, its tables on PostgreSQL
/// (`store::table_sizes`); `total` is in bytes either way.
async fn db_size(db: &Database) -> Result<Value> {
    match db {
        Database::Sqlite(path) => Ok(db_files(path)),
        Database::Postgres(pg) => store::table_sizes(&pg.url).await,
    }
}

/// Whether the stored data levelled off: the total size at the last interval ÷ the first
/// and ÷ the middle one (growth still going on in the second half shows in the latter),
/// and each table's last ÷ first.
fn size_growth(minutes: &[Value]) -> Value {
    let total = |m: &Value| m["db_bytes"].as_f64().unwrap_or(f64::NAN);
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        return Value::Null;
    };
    let mid = &minutes[(minutes.len() - 1) / 2];
    let mut tables = serde_json::Map::new();
    if let (Some(a), Some(b)) = (first["sizes"]["tables"].as_object(), last["sizes"]["tables"].as_object()) {
        for (name, v) in b {
            let before = a.get(name).and_then(|t| t["total"].as_f64()).unwrap_or(f64::NAN);
            tables.insert(name.clone(), json!(v["total"].as_f64().unwrap_or(f64::NAN) / before));
        }
    }
    json!({
        "total_bytes": minutes.iter().map(total).collect::<Vec<_>>(),
        "last_vs_first": total(last) / total(first),
        "last_vs_mid": total(last) / total(mid), "mid_interval": mid["minute"],
        "tables_last_vs_first": tables,
    })
}

/// Sizes of the server's database files (`rota.db`, `rota.db.logs`, their `-wal`/`-shm`).
fn db_files(db: &Path) -> Value {
    let mut out = serde_json::Map::new();
    let mut total = 0;
    let (Some(dir), Some(name)) = (db.parent(), db.file_name().and_then(|n| n.to_str())) else {
        return Value::Null;
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with(name)
                && let Ok(m) = e.metadata()
            {
                total += m.len();
                out.insert(file, json!(m.len()));
            }
        }
    }
    out.insert("total".into(), json!(total));
    Value::Object(out)
}

async fn wait_registered(client: &Client, name: &str) -> Result<()> {
    for _ in 0..600 {
        if let Ok(list) = client.list_workers().await
            && list.workers.iter().any(|w| w.name == name)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("worker {name} did not register")
}

/// A counter from `/metrics`.
async fn metric(client: &Client, name: &str) -> Result<u64> {
    let text = client.metrics_text().await?;
    crate::cluster::metric_sum(&text, name).with_context(|| format!("metric {name} missing"))
}

/// Polls a counter until it reaches `n` (or [`WAIT_LIMIT`] passes); returns its value.
async fn wait_metric(client: &Client, name: &str, n: u64) -> Result<u64> {
    let until = Instant::now() + WAIT_LIMIT;
    loop {
        let v = metric(client, name).await?;
        if v >= n || Instant::now() > until {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Jobs of the default queue in any state but `succeeded` (at most 1000 are counted).
async fn not_succeeded(client: &Client) -> Result<u64> {
    let q = ListJobsQuery {
        state: Some("queued,unschedulable,running,failed,cancelled,revoked".into()),
        queue: Some("default".into()),
        limit: Some(1000),
        ..ListJobsQuery::default()
    };
    Ok(client.list_jobs(&q).await?.jobs.len() as u64)
}

// ---------------------------------------------------------------------------------------
// claim depth

async fn claim_depth(args: &Args) -> Result<Value> {
    let c = BenchCluster::start(&args.rota).await?;
    let probe = register(&c, "probe", 8).await?;
    let budget = Instant::now() + Duration::from_secs(args.fill_budget_secs);
    let fill_start = Instant::now();
    let mut queued = fill_queue(&c.client, args.shallow, budget).await?;
    let shallow_depth = queued;
    let mut tally = ClaimTally::default();
    let shallow = time_claims(&probe, args.claim_samples, &mut tally).await?;
    queued -= tally.claimed;
    let more = args.deep.saturating_sub(queued);
    queued += fill_queue(&c.client, more, budget).await?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let deep_depth = queued;
    let claimed_before = tally.claimed;
    let deep = time_claims(&probe, args.claim_samples, &mut tally).await?;
    queued -= tally.claimed - claimed_before;

    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let submitted = c.metric("rota_jobs_submitted_total").await?;
    Ok(json!({
        "shallow_depth": shallow_depth, "deep_depth": deep_depth, "deep_asked": args.deep,
        "samples": args.claim_samples, "shallow": shallow, "deep": deep,
        "deep_vs_shallow_p50": deep["max1_ms"]["p50"].as_f64().unwrap_or(f64::NAN)
            / shallow["max1_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        "queue_fill_s": fill_secs, "queued_left": queued, "jobs_submitted": submitted,
        "attempts_claimed": claimed, "completions": completed,
        "lost": tally.claimed.saturating_sub(tally.recorded).max(claimed.saturating_sub(completed)),
        "duplicated": tally.duplicates + tally.repeated + completed.saturating_sub(tally.claimed),
    }))
}

/// What the synthetic clients saw of their claims and completions.
#[derive(Default)]
struct ClaimTally {
    claimed: u64,
    /// Completions answered 200 and not `repeated`.
    recorded: u64,
    repeated: u64,
    /// Jobs handed out twice.
    duplicates: u64,
    jobs: HashSet<rota_domain::JobId>,
}

/// Times `n` claims of one step and `n` of eight (a worker's usual batch), each followed by
/// completing what it got, so the queue depth barely moves and nothing stays leased.
async fn time_claims(w: &WorkerClient, n: u32, tally: &mut ClaimTally) -> Result<Value> {
    let (mut one, mut eight) = (Vec::new(), Vec::new());
    w.heartbeat(&HeartbeatRequest::default()).await?;
    for _ in 0..n {
        for (max, into) in [(1, &mut one), (8, &mut eight)] {
            let t = Instant::now();
            let got = w.claim(&ClaimRequest { max, wait_ms: 0 }).await?.attempts;
            into.push(t.elapsed().as_secs_f64() * 1000.0);
            if got.is_empty() {
                bail!("claim found nothing queued");
            }
            complete_all(w, got, tally).await?;
        }
    }
    Ok(json!({"max1_ms": summary(&mut one), "max8_ms": summary(&mut eight)}))
}

/// Completes `got` as succeeded in one call and files the outcome.
async fn complete_all(
    w: &WorkerClient,
    got: Vec<rota_api_types::worker::ClaimedStep>,
    tally: &mut ClaimTally,
) -> Result<()> {
    tally.claimed += got.len() as u64;
    let results = got
        .into_iter()
        .map(|a| {
            if !tally.jobs.insert(a.job_id) {
                tally.duplicates += 1;
            }
            CompleteItem {
                job_id: a.job_id,
                step: a.step,
                attempt_id: a.attempt_id,
                outcome: AttemptOutcome::Succeeded,
                logs: Vec::new(),
                dropped_bytes: 0,
                run_ms: None,
                outputs: Default::default(),
            }
        })
        .collect();
    for r in w.complete_batch(&CompleteBatchRequest { results, claim: 0 }).await?.results {
        match r.result {
            Some(rec) if r.status == 200 && rec.repeated => tally.repeated += 1,
            Some(_) if r.status == 200 => tally.recorded += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Queues up to `n` jobs in batches until `budget`; returns how many were queued.
async fn fill_queue(client: &Client, n: u64, budget: Instant) -> Result<u64> {
    let batch: Vec<JobSpec> = (0..BATCH).map(|_| shell_job("true")).collect();
    let mut queued = 0;
    while queued < n && Instant::now() < budget {
        let k = (n - queued).min(BATCH) as usize;
        let r = client.submit_batch(&batch[..k]).await?;
        if r.results.iter().any(|i| i.status != 201) {
            bail!("a batch submit was refused");
        }
        queued += k as u64;
    }
    Ok(queued)
}

/// Registers a synthetic protocol client, as a real worker does.
async fn register(c: &BenchCluster, name: &str, concurrency: u32) -> Result<WorkerClient> {
    let client = c.worker_client()?;
    let req = RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        namespace: rota_domain::namespace::default_owned(),
        protocol_minor: rota_domain::PROTOCOL_MINOR,
        name: name.into(),
        host: "bench".into(),
        profile: None,
        version: env!("CARGO_PKG_VERSION").into(),
        queues: vec!["default".into()],
        tags: Vec::new(),
        concurrency,
        capabilities: Vec::new(),
        pid: Some(std::process::id()),
        instance_id: None,
        replace: false,
    };
    client.register(&c.join_token, &req).await.with_context(|| format!("registering {name}"))?;
    Ok(client)
}

// ---------------------------------------------------------------------------------------
// memory

async fn memory(args: &Args) -> Result<Value> {
    let mut c = BenchCluster::start(&args.rota).await?;
    // Its own queue, so the synthetic clients' jobs never reach it: it stays idle.
    let child = c
        .worker_command("idle", args.concurrency, &["--queue", "idle"], "warn")
        .stderr(Stdio::null())
        .spawn()
        .context("starting rota worker")?;
    let worker_pid = child.id();
    c.adopt_worker(child);
    c.wait_registered("idle").await?;
    // Past its first heartbeat and control long-poll: the steady idle state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let worker_idle = worker_rss_bytes(worker_pid);
    let server_empty = rss_bytes(c.server_pid());

    let budget = Instant::now() + Duration::from_secs(args.fill_budget_secs);
    let left = Arc::new(AtomicU64::new(args.finished));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.fill_clients.max(1) {
        let w = register(&c, &format!("filler-{i}"), BATCH as u32).await?;
        let (client, left) = (c.client.clone(), left.clone());
        tasks.push(tokio::spawn(finish_jobs(client, w, left, budget)));
    }
    let mut tally = ClaimTally::default();
    for t in tasks {
        let part = t.await.context("filler panicked")??;
        tally.claimed += part.claimed;
        tally.recorded += part.recorded;
        tally.repeated += part.repeated;
        tally.duplicates += part.duplicates;
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let finished = tally.recorded;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_full = rss_bytes(c.server_pid());
    // A listing reads the job tables; the RSS after it includes the page cache SQLite kept.
    let q = ListJobsQuery {
        state: Some("succeeded".into()),
        queue: None,
        limit: Some(1000),
        ..ListJobsQuery::default()
    };
    let listed = c.client.list_jobs(&q).await?.jobs.len();
    let server_after_list = rss_bytes(c.server_pid());

    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let submitted = c.metric("rota_jobs_submitted_total").await?;
    let mib = |b: Option<u64>| b.map(|b| b as f64 / MIB as f64);
    Ok(json!({
        "worker_idle_rss_mib": mib(worker_idle),
        "finished_asked": args.finished, "finished": finished, "fill_s": fill_secs,
        "fill_jobs_per_s": finished as f64 / fill_secs,
        "server_rss_mib": {"empty": mib(server_empty), "finished": mib(server_full), "after_list": mib(server_after_list)},
        "listed": listed,
        "files": db_size(c.database()).await?,
        "jobs_submitted": submitted, "attempts_claimed": claimed, "completions": completed,
        "not_succeeded": not_succeeded(&c.client).await?,
        "lost": submitted.saturating_sub(completed).max(tally.claimed.saturating_sub(tally.recorded)),
        "duplicated": tally.duplicates + tally.repeated + completed.saturating_sub(submitted),
    }))
}

/// One synthetic client finishing jobs in bulk: submit a batch, claim it back (its own or
/// another client's: the queue is shared, and each claims as many as it submitted),
/// complete them all, until `left` is used up or `budget` passes.
async fn finish_jobs(
    client: Client,
    w: WorkerClient,
    left: Arc<AtomicU64>,
    budget: Instant,
) -> Result<ClaimTally> {
    let batch: Vec<JobSpec> = (0..BATCH).map(|_| shell_job("true")).collect();
    let mut tally = ClaimTally::default();
    let mut beat = Instant::now();
    while Instant::now() < budget {
        // Take up to one batch of what is left; none left ends the loop.
        let take = |l: u64| if l == 0 { None } else { Some(l - l.min(BATCH)) };
        let Ok(prev) = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, take) else {
            break;
        };
        let k = prev.min(BATCH) as usize;
        let r = client.submit_batch(&batch[..k]).await?;
        if r.results.iter().any(|i| i.status != 201) {
            bail!("a batch submit was refused");
        }
        let mut want = k;
        while want > 0 {
            let got = w.claim(&ClaimRequest { max: want as u32, wait_ms: 1000 }).await?.attempts;
            want -= got.len().min(want);
            complete_all(&w, got, &mut tally).await?;
        }
        // Keep the session plainly alive; its attempts never outlive one loop.
        if beat.elapsed() > Duration::from_secs(2) {
            w.heartbeat(&HeartbeatRequest::default()).await?;
            beat = Instant::now();
        }
    }
    Ok(tally)
}

/// p50/p90/p99/max of `v` (ms), rounded to µs.
fn summary(v: &mut [f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        (v[i.min(v.len() - 1)] * 1000.0).round() / 1000.0
    };
    json!({"p50": p(0.5), "p90": p(0.9), "p99": p(0.99), "max": p(1.0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_growth_compares_the_last_interval_with_the_first_and_the_middle() {
        let m = |k: u32, total: u64, jobs: u64| json!({"minute": k, "db_bytes": total, "sizes": {"tables": {"jobs": {"total": jobs}}}});
        let g = size_growth(&[m(1, 100, 40), m(2, 150, 60), m(3, 160, 80)]);
        assert_eq!(g["last_vs_first"].as_f64(), Some(1.6));
        assert_eq!(g["mid_interval"].as_u64(), Some(2));
        assert!(g["last_vs_mid"].as_f64().is_some_and(|r| (r - 160.0 / 150.0).abs() < 1e-9));
        assert_eq!(g["tables_last_vs_first"]["jobs"].as_f64(), Some(2.0));
        assert_eq!(size_growth(&[]), Value::Null);
    }

    #[test]
    fn simple_durations() {
        assert_eq!(humantime_secs("90s"), Some(90));
        assert_eq!(humantime_secs("1m"), Some(60));
        assert_eq!(humantime_secs("2h"), Some(7200));
        assert_eq!(humantime_secs("1m30s"), None);
        assert_eq!(humantime_secs("x"), None);
    }
}
