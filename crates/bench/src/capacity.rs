//! `server-capacity`: how many jobs per second one server can hand out and record when
//! spawning costs nothing. A synthetic fleet of protocol clients (`WorkerClient`, the
//! protocol a real worker speaks: register with the join token, batch-claim for free
//! slots, batch-complete, heartbeat the attempts held) drains N queued jobs without
//! running them. This module owns that fleet, the timing and the exactly-once checks
//! against the server's records.

use crate::cluster::BenchCluster;
use crate::probes::shell_job;
use anyhow::{Context, Result, bail};
use rota_api_types::jobs::ListJobsQuery;
use rota_api_types::worker::{
    ClaimRequest, CompleteBatchRequest, CompleteItem, HeartbeatRequest, RegisterRequest,
};
use rota_client::WorkerClient;
use rota_domain::{AttemptId, AttemptOutcome, JobId, JobSpec, PROTOCOL_VERSION};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Jobs queued before the clients start.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) jobs: u32,
    /// Synthetic protocol clients (each one registered session).
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: u32,
    /// Slots per client: the most attempts one claim asks for.
    #[arg(long, default_value_t = 8)]
    pub(crate) capacity: u32,
}

/// Jobs per batch submit while queueing (the server's batch endpoint takes many at once).
const SUBMIT_BATCH: usize = 1000;
/// Long-poll of an idle claim: short, so the clients notice the end of the run quickly.
const CLAIM_WAIT_MS: u64 = 250;
/// The run is abandoned past this.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// What the clients did, summed over the fleet.
#[derive(Default)]
struct Tally {
    /// Completions the server answered 200 and not `repeated`.
    recorded: AtomicU64,
    /// Completions answered `repeated` (a second report of a recorded result).
    repeated: AtomicU64,
    /// Completion entries refused (409 etc.).
    refused: AtomicU64,
    claim_calls: AtomicU64,
    empty_claims: AtomicU64,
    complete_calls: AtomicU64,
    heartbeat_calls: AtomicU64,
    /// Every job a client saw succeed, to find one recorded twice.
    succeeded: Mutex<Vec<JobId>>,
}

/// One synthetic worker: its session and the attempts it holds between claim and complete.
struct Synthetic {
    client: WorkerClient,
    held: Arc<Mutex<Vec<AttemptId>>>,
    heartbeat: Duration,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    if args.clients == 0 || args.capacity == 0 {
        bail!("--clients and --capacity must be at least 1");
    }
    let c = BenchCluster::start(&args.rota).await?;
    let queue_started = Instant::now();
    let batch: Vec<JobSpec> = (0..SUBMIT_BATCH).map(|_| shell_job("true")).collect();
    let mut queued = 0u32;
    while queued < args.jobs {
        let n = ((args.jobs - queued) as usize).min(SUBMIT_BATCH);
        let r = c.client.submit_batch(&batch[..n]).await?;
        if r.results.iter().any(|i| i.status != 201) {
            bail!("a batch submit was refused");
        }
        queued += n as u32;
    }
    let queue_secs = queue_started.elapsed().as_secs_f64();

    // Registration is not part of the timed window: a fleet registers once, then works.
    let register_started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..args.clients {
        fleet.push(register(&c, i, args.capacity).await?);
    }
    let register_secs = register_started.elapsed().as_secs_f64();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Notify::new());
    let jobs = u64::from(args.jobs);
    let server_before = c.server_cpu()?;
    let bench_before = crate::cluster::CpuTimes::of(std::process::id())?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in fleet {
        let (tally, stop, done) = (tally.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(client_loop(w, args.capacity, jobs, tally, stop, done)));
    }
    // The clients signal when their recorded completions reach N: no /metrics polling in
    // the timed window (it would cost the server a worker listing per poll).
    let finished = tokio::time::timeout(RUN_LIMIT, async {
        while tally.recorded.load(Ordering::SeqCst) < jobs && !stop.load(Ordering::SeqCst) {
            // A short nap bounds the wait should a notification race the check.
            let _ = tokio::time::timeout(Duration::from_millis(100), done.notified()).await;
        }
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    let server_after = c.server_cpu()?;
    let bench_after = crate::cluster::CpuTimes::of(std::process::id())?;
    stop.store(true, Ordering::SeqCst);
    let mut client_errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => client_errors.push(format!("{e:#}")),
            Err(e) => client_errors.push(format!("client task: {e}")),
        }
    }
    if finished.is_err() {
        bail!(
            "not all completions recorded within {RUN_LIMIT:?} ({}/{jobs}); client errors: {client_errors:?}",
            tally.recorded.load(Ordering::SeqCst)
        );
    }
    if let Some(e) = client_errors.first() {
        bail!("{} synthetic client(s) failed, first: {e}", client_errors.len());
    }

    // Exactly once, from the server's own records: its counters, the queue's depth, and
    // the job listing of every non-succeeded state.
    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let lost_attempts = c.metric("rota_attempts_lost_total").await?;
    let q = ListJobsQuery {
        state: Some("queued,unschedulable,running,failed,cancelled,revoked".into()),
        queue: None,
        limit: Some(1000),
        ..ListJobsQuery::default()
    };
    let not_succeeded = c.client.list_jobs(&q).await?.jobs.len() as u64;
    let queues = c.client.list_queues().await?.queues;
    let (ready, running) = queues.iter().fold((0, 0), |(r, n), q| (r + q.ready, n + q.running));
    let succeeded = std::mem::take(&mut *tally.succeeded.lock().unwrap_or_else(PoisonError::into_inner));
    let distinct = succeeded.iter().collect::<HashSet<_>>().len() as u64;
    let twice = succeeded.len() as u64 - distinct;

    let calls = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let claims = calls(&tally.claim_calls);
    let completes = calls(&tally.complete_calls);
    let heartbeats = calls(&tally.heartbeat_calls);
    let requests = claims + completes + heartbeats;
    let server_cpu = server_after.own - server_before.own;
    let bench_cpu = bench_after.own - bench_before.own;
    let per_job_ms = |s: f64| (s * 1000.0 / jobs as f64 * 1000.0).round() / 1000.0;
    Ok(json!({
        "workload": "server-capacity", "system": "rota",
        "jobs": args.jobs, "clients": args.clients, "capacity": args.capacity,
        "seconds": secs, "per_s": jobs as f64 / secs,
        "server_cpu_ms_per_job": per_job_ms(server_cpu),
        "server_cpu_utilisation": server_cpu / secs,
        "bench_client_cpu_ms_per_job": per_job_ms(bench_cpu),
        "requests": {
            "claim": claims, "claim_empty": calls(&tally.empty_claims), "complete_batch": completes,
            "heartbeat": heartbeats, "per_job": requests as f64 / jobs as f64,
            "jobs_per_claim": claimed as f64 / (claims - calls(&tally.empty_claims)).max(1) as f64,
            "server_cpu_us_per_request": (server_cpu * 1e6 / requests.max(1) as f64).round(),
        },
        "queue_seconds": queue_secs, "register_seconds": register_secs,
        "attempts_claimed": claimed, "completions": completed, "attempts_lost": lost_attempts,
        "repeated_completions": calls(&tally.repeated), "refused_completions": calls(&tally.refused),
        "not_succeeded": not_succeeded, "queue_ready": ready, "queue_running": running,
        "lost": jobs.saturating_sub(completed).max(jobs.saturating_sub(distinct)).max(not_succeeded).max(ready + running),
        "duplicated": completed.saturating_sub(jobs).max(twice),
    }))
}

/// Registers synthetic client `i` with the join token, as a real worker does.
async fn register(c: &BenchCluster, i: u32, capacity: u32) -> Result<Synthetic> {
    let client = c.worker_client()?;
    let req = RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        namespace: rota_domain::namespace::default_owned(),
        protocol_minor: rota_domain::PROTOCOL_MINOR,
        name: format!("synthetic-{i}"),
        host: "bench".into(),
        profile: None,
        version: env!("CARGO_PKG_VERSION").into(),
        queues: vec!["default".into()],
        tags: Vec::new(),
        concurrency: capacity,
        capabilities: vec!["complete-batch".into()],
        pid: Some(std::process::id()),
        instance_id: None,
        replace: false,
    };
    let resp =
        client.register(&c.join_token, &req).await.with_context(|| format!("registering client {i}"))?;
    Ok(Synthetic {
        client,
        held: Arc::default(),
        heartbeat: Duration::from_millis(resp.heartbeat_interval_ms.max(100)),
    })
}

/// One client: claim up to `capacity`, complete them all as succeeded in one batch call,
/// repeat until told to stop. Its heartbeat task renews what it holds meanwhile, so a
/// slow server never turns a synthetic attempt into a lost one.
async fn client_loop(
    w: Synthetic,
    capacity: u32,
    jobs: u64,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    done: Arc<Notify>,
) -> Result<()> {
    let beat = tokio::spawn(heartbeat_loop(w.client.clone(), w.held.clone(), w.heartbeat, tally.clone()));
    let result = async {
        let mut mine = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let resp = w.client.claim(&ClaimRequest { max: capacity, wait_ms: CLAIM_WAIT_MS }).await?;
            tally.claim_calls.fetch_add(1, Ordering::Relaxed);
            if resp.attempts.is_empty() {
                tally.empty_claims.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            set_held(&w.held, resp.attempts.iter().map(|a| a.attempt_id).collect());
            let results: Vec<CompleteItem> = resp
                .attempts
                .into_iter()
                .map(|a| CompleteItem {
                    job_id: a.job_id,
                    step: a.step,
                    attempt_id: a.attempt_id,
                    outcome: AttemptOutcome::Succeeded,
                    logs: Vec::new(),
                    dropped_bytes: 0,
                    run_ms: None,
                    outputs: Default::default(),
                })
                .collect();
            let jobs_of: Vec<JobId> = results.iter().map(|r| r.job_id).collect();
            let reply = w.client.complete_batch(&CompleteBatchRequest { results, claim: 0 }).await?;
            tally.complete_calls.fetch_add(1, Ordering::Relaxed);
            set_held(&w.held, Vec::new());
            let mut recorded = 0;
            for (item, job) in reply.results.iter().zip(jobs_of) {
                match &item.result {
                    Some(r) if item.status == 200 && r.repeated => {
                        tally.repeated.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) if item.status == 200 => {
                        recorded += 1;
                        mine.push(job);
                    }
                    _ => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if tally.recorded.fetch_add(recorded, Ordering::SeqCst) + recorded >= jobs {
                done.notify_one();
            }
        }
        tally.succeeded.lock().unwrap_or_else(PoisonError::into_inner).extend(mine);
        anyhow::Ok(())
    }
    .await;
    beat.abort();
    if result.is_err() {
        // One broken client ends the run at once rather than at the time limit.
        stop.store(true, Ordering::SeqCst);
        done.notify_one();
    }
    result
}

fn set_held(held: &Mutex<Vec<AttemptId>>, ids: Vec<AttemptId>) {
    *held.lock().unwrap_or_else(PoisonError::into_inner) = ids;
}

/// Renews the leases of the attempts a client holds, every heartbeat interval.
async fn heartbeat_loop(
    client: WorkerClient,
    held: Arc<Mutex<Vec<AttemptId>>>,
    every: Duration,
    tally: Arc<Tally>,
) {
    loop {
        tokio::time::sleep(every).await;
        let attempts = held.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let req = HeartbeatRequest { attempts, draining: false, concurrency: None };
        // A failed heartbeat shows up as lost attempts in the checks; nothing to do here.
        let _ = client.heartbeat(&req).await;
        tally.heartbeat_calls.fetch_add(1, Ordering::Relaxed);
    }
}
