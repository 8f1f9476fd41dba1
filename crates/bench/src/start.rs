//! `worker-start`: how long `rota worker start` (background worker under its supervisor,
//! returning once the worker registered) takes, `--runs` times, each with a fresh state
//! directory so every run really starts a new supervisor and worker. Two measures per run:
//! launch → the server's record of the registration (`registeredAt`, same clock), and
//! launch → the command returned. The worker is then stopped with `rota worker stop`
//! (not timed). This module owns those runs and their checks.

use crate::cluster::BenchCluster;
use anyhow::{Context, Result, bail};
use rota_api_types::workers::{WorkerState, WorkerView};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Starts to time.
    #[arg(long, default_value_t = 20)]
    pub(crate) runs: u32,
}

/// How often the server's worker list is polled while a start runs: the poll is only a
/// fallback (the server's own registration time is the measure), so it stays gentle.
const POLL: Duration = Duration::from_millis(10);

/// One timed start.
struct Run {
    registered_ms: f64,
    listed_ms: f64,
    command_ms: f64,
    /// `tookMs` as the command itself reported it.
    reported_ms: Option<u64>,
    session_at_start: String,
    session_at_stop: Option<String>,
    offline_after_stop: bool,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let c = BenchCluster::start(&args.rota).await?;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        match one(&c, &args.rota, i).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                // The background worker outlives this process unless stopped: stop it
                // (best effort) before reporting the failure.
                let dir = c.dir.path().join(format!("start-{i}"));
                let _ = rota(&c, &args.rota, &dir).args(["worker", "stop", "--mode", "hard"]).output().await;
                return Err(e.context(format!("run {i}")));
            }
        }
    }
    let stats = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        json!({"p50": pct(&v, 0.5), "min": pct(&v, 0.0), "max": pct(&v, 1.0)})
    };
    let reported: Vec<u64> = runs.iter().filter_map(|r| r.reported_ms).collect();
    // A session that changed between registration and stop means the supervisor started
    // the worker more than once; a worker still live after stop was not stopped.
    let restarted = runs.iter().filter(|r| r.session_at_stop.as_deref() != Some(&r.session_at_start)).count();
    let not_offline = runs.iter().filter(|r| !r.offline_after_stop).count();
    Ok(json!({
        "workload": "worker-start", "system": "rota", "runs": args.runs,
        "launch_to_registered_ms": stats(|r| r.registered_ms),
        "launch_to_listed_ms": stats(|r| r.listed_ms), "list_poll_ms": POLL.as_millis() as u64,
        "command_returned_ms": stats(|r| r.command_ms),
        "command_reported_took_ms": reported,
        "not_offline_after_stop": not_offline,
        // Every run registered (else it failed above); a second registration is a duplicate.
        "lost": 0, "duplicated": restarted,
    }))
}

fn wall_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// A `rota` command in run `dir`'s private environment: HOME and the data dir are the
/// cluster's (where its token files are), state and runtime dirs are the run's own.
fn rota(c: &BenchCluster, bin: &Path, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", c.dir.path())
        .env("XDG_DATA_HOME", c.dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("ROTA_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn one(c: &BenchCluster, bin: &Path, i: u32) -> Result<Run> {
    let dir = c.dir.path().join(format!("start-{i}"));
    std::fs::create_dir_all(&dir)?;
    let name = format!("start-{i}");
    let mut cmd = rota(c, bin, &dir);
    cmd.args(["worker", "start", "--server", &c.url, "--join-token", &c.join_token, "--name", &name])
        .args(["--concurrency", "2", "--workspace"])
        .arg(dir.join("ws"))
        .arg("--json");
    let launched_wall = wall_ms();
    let t0 = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("rota worker start")?;
    let output = child.wait_with_output();
    tokio::pin!(output);
    let mut command_ms = None;
    let mut out = None;
    let mut listed: Option<(f64, WorkerView)> = None;
    let limit = Instant::now() + Duration::from_secs(30);
    while listed.is_none() || out.is_none() {
        if Instant::now() > limit {
            bail!("worker {name} neither registered nor returned within 30 s");
        }
        if out.is_none() {
            tokio::select! {
                o = &mut output => {
                    command_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                    out = Some(o?);
                }
                () = tokio::time::sleep(POLL) => {}
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
        if listed.is_none()
            && let Some(w) = find(c, &name).await?
            && w.state != WorkerState::Offline
        {
            listed = Some((t0.elapsed().as_secs_f64() * 1000.0, w));
        }
    }
    let (Some(out), Some(command_ms), Some((listed_ms, view))) = (out, command_ms, listed) else {
        bail!("unreachable: loop ended early");
    };
    if !out.status.success() {
        bail!("rota worker start failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let reported: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    let reported_ms = reported.as_ref().and_then(|v| v.get("tookMs")).and_then(Value::as_u64);
    let registered_ms = view.registered_at.timestamp_millis() as f64 - launched_wall;

    let stop = rota(c, bin, &dir).args(["worker", "stop", "--json"]).output().await?;
    if !stop.status.success() {
        bail!("rota worker stop failed ({}): {}", stop.status, String::from_utf8_lossy(&stop.stderr));
    }
    let after = find(c, &name).await?;
    Ok(Run {
        registered_ms,
        listed_ms,
        command_ms,
        reported_ms,
        session_at_start: view.session_id.to_string(),
        session_at_stop: after.as_ref().map(|w| w.session_id.to_string()),
        offline_after_stop: after.is_some_and(|w| w.state == WorkerState::Offline),
    })
}

/// The server's latest session of `name`, if any.
async fn find(c: &BenchCluster, name: &str) -> Result<Option<WorkerView>> {
    Ok(c.client.list_workers().await?.workers.into_iter().find(|w| w.name == name))
}

/// The `p` quantile of sorted samples (nearest rank).
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
