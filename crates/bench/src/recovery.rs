//! `failure-recovery`: worker A runs N sleeping steps, worker B stands by; A is SIGKILLed
//! and the clock starts. Measured: until the server declared A's attempts lost, until
//! every job runs again on B, until every job succeeded. Checked from the server's
//! records: every job succeeded exactly once, and each ran twice (once on A, lost; once on
//! B). A's orphaned step processes are watched too: nothing is left to fence them once
//! their worker is dead. This module owns that scenario; its server, with short leases,
//! comes from `BenchCluster::start_with`.

use crate::cluster::BenchCluster;
use anyhow::{Result, bail};
use rota_api_types::jobs::JobDetail;
use rota_client::Client;
use rota_domain::{AttemptStatus, JobId, JobSpec};
use serde_json::{Value, json};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Jobs in flight on worker A when it is killed (A and B both get this concurrency).
    #[arg(long, default_value_t = 50)]
    pub(crate) jobs: u32,
    /// How long each step sleeps. It must outlast A's start-up of the steps plus B's
    /// registration, or some jobs finish on A before the kill (the run then fails).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) step_seconds: f64,
    /// The server's lease TTL (`rota server --lease-ttl`).
    #[arg(long, default_value = "2s")]
    pub(crate) lease_ttl: String,
    /// The server's heartbeat interval (`rota server --heartbeat-interval`).
    #[arg(long, default_value = "500ms")]
    pub(crate) heartbeat_interval: String,
}

/// Polling the server's counters while the clock runs: fine enough for figures of
/// seconds, cheap for the server (two workers in its `/metrics` gauge).
const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(120);

/// A step that leaves a trace on disk without writing to its stdout (whose reader, the
/// worker, is about to die): its shell's pid (= its process group) when it starts, and a
/// `done` file if it lives to the end.
fn marked_job(marks: &Path, seconds: f64) -> JobSpec {
    let m = marks.display();
    let run = format!(
        "echo $$ > '{m}'/$ROTA_JOB_ID.$ROTA_ATTEMPT.pid; sleep {seconds}; : > '{m}'/$ROTA_JOB_ID.$ROTA_ATTEMPT.done"
    );
    crate::probes::shell_job(&run)
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// True while `pid` is a live (not zombie) process leading its own group: a step's shell
/// (pid reuse by an unrelated process would not lead a group of that id).
fn group_leader_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    rota_worker::procfs::stat(pid).is_some_and(|s| !s.is_zombie() && s.pgid == pid)
}

/// The pids A's attempts (attempt 1) wrote, per job.
fn first_attempt_pids(marks: &Path, ids: &[JobId]) -> Vec<u32> {
    ids.iter()
        .filter_map(|id| std::fs::read_to_string(marks.join(format!("{id}.1.pid"))).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn count_marks(marks: &Path, ids: &[JobId], suffix: &str) -> usize {
    ids.iter().filter(|id| marks.join(format!("{id}.{suffix}")).exists()).count()
}

async fn details(client: &Client, ids: &[JobId]) -> Result<Vec<JobDetail>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(client.get_job(*id).await?);
    }
    Ok(out)
}

/// Polls `done` every [`POLL`] until it holds; the elapsed time since `t0`.
async fn until<F, Fut>(t0: Instant, what: &str, mut done: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    while !done().await? {
        if t0.elapsed() > LIMIT {
            bail!("{what}: not within {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(t0.elapsed())
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    let n = u64::from(args.jobs);
    if n == 0 {
        bail!("--jobs must be at least 1");
    }
    let mut rig = BenchCluster::start_with(
        &args.rota,
        &["--lease-ttl", &args.lease_ttl, "--heartbeat-interval", &args.heartbeat_interval],
    )?;
    let marks = rig.dir.path().join("marks");
    std::fs::create_dir_all(&marks)?;
    let a_pid = rig.launch_worker("A", args.jobs)?;
    rig.wait_registered("A").await?;

    // B is started only once A holds every job: a B already running would claim some.
    let specs: Vec<JobSpec> = (0..args.jobs).map(|_| marked_job(&marks, args.step_seconds)).collect();
    let mut ids = Vec::new();
    for chunk in specs.chunks(1000) {
        for item in rig.client.submit_batch(chunk).await?.results {
            match item.result {
                Some(r) if item.status == 201 => ids.push(r.id),
                _ => bail!("a submit was refused: {:?}", item.error),
            }
        }
    }
    let t_submit = Instant::now();
    {
        let (r, m, i) = (&rig, &marks, &ids);
        until(t_submit, "A claims every job", || async move {
            Ok(r.metric("rota_attempts_claimed_total").await? >= n)
        })
        .await?;
        until(t_submit, "every step's shell on A started", || async move {
            Ok(count_marks(m, i, "1.pid") == i.len())
        })
        .await?;
    }
    let before = details(&rig.client, &ids).await?;
    let on_a = before
        .iter()
        .filter(|d| {
            d.step_details
                .iter()
                .flat_map(|s| &s.attempts)
                .any(|a| a.worker == "A" && a.status == AttemptStatus::Running)
        })
        .count();
    if on_a != ids.len() {
        bail!("only {on_a} of {} jobs run on A before the kill", ids.len());
    }
    rig.launch_worker("B", args.jobs)?;
    rig.wait_registered("B").await?;
    let a_groups = first_attempt_pids(&marks, &ids);

    rig.kill_worker(a_pid)?;
    let t_kill = Instant::now();
    let submit_to_kill = t_kill - t_submit;
    let kill_wall = wall_ms();
    let finished_on_a_before_kill = count_marks(&marks, &ids, "1.done");
    if finished_on_a_before_kill > 0 {
        bail!("{finished_on_a_before_kill} steps ended on A before the kill: raise --step-seconds");
    }
    let alive_after_kill = a_groups.iter().filter(|p| group_leader_alive(**p)).count();

    // The three moments, from the server's counters: A's attempts lost (lease expiry),
    // all re-claimed (a claim marks the new attempt running on B), all completed.
    let r = &rig;
    let lost_at = until(t_kill, "A's attempts declared lost", || async move {
        Ok(r.metric("rota_attempts_lost_total").await? >= n)
    })
    .await?;
    let first_rerun: Cell<Option<Duration>> = Cell::new(None);
    let first = &first_rerun;
    let rerun_at = until(t_kill, "every job running again", || async move {
        let claimed = r.metric("rota_attempts_claimed_total").await?;
        if claimed > n && first.get().is_none() {
            first.set(Some(t_kill.elapsed()));
        }
        Ok(claimed >= 2 * n)
    })
    .await?;
    // Taken now: A's orphans still alive while B runs the same jobs are double execution
    // in progress.
    let a_alive_at_rerun = a_groups.iter().filter(|p| group_leader_alive(**p)).count();
    let done_at = until(t_kill, "every job succeeded", || async move {
        Ok(r.metric("rota_attempts_completed_total").await? >= n)
    })
    .await?;
    let first_rerun = first_rerun.get();

    // A's orphans: did they finish their work (a `done` file for attempt 1)? They end by
    // themselves; any still around after their sleep could have ended are killed here, as
    // our descendants.
    let orphan_deadline = Instant::now() + Duration::from_secs_f64(args.step_seconds + 5.0);
    while a_groups.iter().any(|p| group_leader_alive(*p)) && Instant::now() < orphan_deadline {
        tokio::time::sleep(POLL).await;
    }
    let orphans_outlived = a_groups.iter().filter(|p| group_leader_alive(**p)).count();
    for p in a_groups.iter().filter(|p| group_leader_alive(**p)) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{p}")]).status();
    }
    let a_orphans_finished = count_marks(&marks, &ids, "1.done");

    // Exactly once, from the server's records of every job.
    let after = details(&rig.client, &ids).await?;
    let (mut not_succeeded, mut twice_succeeded, mut reexecuted, mut success_on_b) = (0u64, 0u64, 0u64, 0u64);
    let (mut restart_max, mut finish_max) = (i64::MIN, i64::MIN);
    for d in &after {
        let attempts: Vec<_> = d.step_details.iter().flat_map(|s| &s.attempts).collect();
        let wins: Vec<_> = attempts.iter().filter(|a| a.status == AttemptStatus::Succeeded).collect();
        if d.summary.state != "succeeded" || wins.is_empty() {
            not_succeeded += 1;
        }
        if wins.len() > 1 {
            twice_succeeded += 1;
        }
        if attempts.iter().any(|a| a.worker == "A" && a.status == AttemptStatus::Lost) && attempts.len() >= 2
        {
            reexecuted += 1;
        }
        if wins.iter().any(|a| a.worker == "B") {
            success_on_b += 1;
        }
        for a in attempts.iter().filter(|a| a.worker == "B") {
            restart_max = restart_max.max(a.started_at.timestamp_millis());
            if let Some(f) = a.finished_at {
                finish_max = finish_max.max(f.timestamp_millis());
            }
        }
    }
    let since_kill = |t: i64| (t != i64::MIN).then(|| t - kill_wall);
    let lost_metric = rig.metric("rota_attempts_lost_total").await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "workload": "failure-recovery", "system": "rota", "jobs": args.jobs,
        "concurrency": {"A": args.jobs, "B": args.jobs}, "step": format!("sleep {}", args.step_seconds),
        "lease_ttl": args.lease_ttl, "heartbeat_interval": args.heartbeat_interval,
        "retry_backoff": "job default (initial 1s, ±20% jitter)",
        "submit_to_kill_ms": ms(submit_to_kill), "kill_to_lost_ms": ms(lost_at),
        "kill_to_first_rerun_ms": first_rerun.map(ms),
        "kill_to_all_rerunning_ms": ms(rerun_at),
        "kill_to_all_succeeded_ms": ms(done_at),
        "server_record_kill_to_last_restart_ms": since_kill(restart_max),
        "server_record_kill_to_last_success_ms": since_kill(finish_max),
        "a_orphans": {
            "groups": a_groups.len(), "alive_after_kill": alive_after_kill,
            "alive_when_all_rerunning": a_alive_at_rerun, "finished_their_step": a_orphans_finished,
            "outlived_their_sleep": orphans_outlived,
        },
        "attempts_lost_metric": lost_metric, "succeeded_on_b": success_on_b,
        "reexecuted": reexecuted, "lost": not_succeeded, "duplicated": twice_succeeded,
    }))
}
