//! The measurements. Each returns one JSON object; timing is wall clock on this host.

use crate::cluster::{BenchCluster, CpuTimes};
use anyhow::{Result, bail};
use rota_api_types::jobs::ListJobsQuery;
use rota_domain::{JobSpec, StepSpec};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A one-step job running `run` in the default queue (every workload's unit of work).
pub(crate) fn shell_job(run: &str) -> JobSpec {
    JobSpec::new(vec![StepSpec::new("s", run)])
}

/// `sh -c true` with stdout/stderr piped and read, `parallel` threads: the ceiling a worker
/// that captures output can reach on this machine.
pub(crate) fn spawn_probe(jobs: u32, parallel: u32) -> Result<Value> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let cpu_before = CpuTimes::of(std::process::id())?;
    let start = Instant::now();
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < jobs {
                    let mut child = Command::new("sh")
                        .args(["-c", "true"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    let mut sink = Vec::new();
                    if let Some(mut o) = child.stdout.take() {
                        o.read_to_end(&mut sink)?;
                    }
                    if let Some(mut e) = child.stderr.take() {
                        e.read_to_end(&mut sink)?;
                    }
                    child.wait()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = CpuTimes::of(std::process::id())?;
    let spent = (cpu.own - cpu_before.own) + (cpu.children - cpu_before.children);
    Ok(
        json!({"probe": "spawn", "jobs": jobs, "parallel": parallel, "seconds": secs, "per_s": f64::from(jobs) / secs,
        "cpu_ms_per_spawn": (spent * 1e6 / f64::from(jobs)).round() / 1000.0}),
    )
}

/// N `sh -c true` jobs queued first, then one worker launched; timed from its launch until
/// the server has recorded every completion. Checks nothing was lost or run twice, and reports
/// the CPU time the worker, its steps and the server used per job.
pub(crate) async fn burn_down(
    rota: &Path,
    jobs: u32,
    concurrency: u32,
    ballast_mib: Option<u32>,
) -> Result<Value> {
    let mut c = BenchCluster::start(rota).await?;
    let batch: Vec<JobSpec> = (0..1000).map(|_| shell_job("true")).collect();
    let mut queued = 0;
    while queued < jobs {
        let n = (jobs - queued).min(1000) as usize;
        let r = c.client.submit_batch(&batch[..n]).await?;
        if r.results.iter().any(|i| i.status != 201) {
            bail!("a batch submit was refused");
        }
        queued += n as u32;
    }
    let server_before = c.server_cpu()?;
    let start = Instant::now();
    let ballast = ballast_mib.map(|mib| mib.to_string());
    let extra: Vec<&str> = ballast.iter().flat_map(|mib| ["--bench-ballast-mib", mib.as_str()]).collect();
    c.launch_worker_with("bench", concurrency, &extra)?;
    let mut first_done: Option<Duration> = None;
    loop {
        let done = c.metric("rota_attempts_completed_total").await?;
        if done > 0 && first_done.is_none() {
            first_done = Some(start.elapsed());
        }
        if done >= u64::from(jobs) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("burn-down did not finish in 10 minutes ({done}/{jobs})");
        }
        // /metrics is not free for the server (it lists the workers for a gauge): poll it
        // gently, at a cost of at most 50 ms on a run of many seconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let worker_rss_mib = c.worker_rss_bytes().map(|b| b / (1024 * 1024));
    // Robust against other load on the machine, unlike jobs/s.
    let (server, worker) = (c.server_cpu()?, c.worker_cpu()?);
    let per_job_ms = |s: f64| (s * 1000.0 / f64::from(jobs) * 1000.0).round() / 1000.0;
    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let q = ListJobsQuery {
        state: Some("queued,unschedulable,running,failed,cancelled,revoked".into()),
        queue: None,
        limit: Some(1000),
        ..ListJobsQuery::default()
    };
    let unfinished = c.client.list_jobs(&q).await?.jobs.len();
    Ok(json!({
        "workload": "burn-down", "jobs": jobs, "concurrency": concurrency, "ballast_mib": ballast_mib,
        "worker_rss_mib": worker_rss_mib, "seconds": secs,
        "per_s": f64::from(jobs) / secs,
        "first_completion_s": first_done.map(|d| d.as_secs_f64()),
        "cpu_ms_per_job": {
            "worker": per_job_ms(worker.own), "steps": per_job_ms(worker.children),
            "server": per_job_ms(server.own - server_before.own),
        },
        "attempts_claimed": claimed, "completions": completed, "not_succeeded": unfinished,
        "lost": u64::from(jobs).saturating_sub(completed).max(unfinished as u64),
        "duplicated": completed.saturating_sub(u64::from(jobs)),
    }))
}
