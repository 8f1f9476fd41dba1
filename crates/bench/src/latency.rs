//! `latency`: open-loop submit → spawn latency, at idle (low rate) or under a fixed arrival
//! rate. This module owns the arrival schedule, reading the worker's `step started` trace
//! events (the spawn moment, stamped by the worker itself), a probe of the server's share
//! alone (submit → a parked synthetic claim answered), and the exactly-once check of the
//! jobs it submitted against the server's records.
//!
//! Every timestamp compared here is wall clock (`SystemTime`) on this host: the submitter
//! stamps just before its submit call, the worker stamps right after `posix_spawn`
//! returned. Both processes read the same clock, so no offset needs estimating.

use crate::cluster::BenchCluster;
use crate::probes::shell_job;
use anyhow::{Context, Result, bail};
use rota_api_types::worker::{ClaimRequest, CompleteBatchRequest, CompleteItem, RegisterRequest};
use rota_domain::{AttemptOutcome, JobId, PROTOCOL_VERSION};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Arrivals per second: job i is submitted at t0 + i/rate whatever happened before.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) rate: f64,
    /// Measured jobs (after the warm-up).
    #[arg(long, default_value_t = 200)]
    pub(crate) samples: u32,
    /// The worker's concurrency.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: u32,
    /// Jobs run one at a time before measuring (connections, page cache, allocator).
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup: u32,
    /// Submits timed to a synthetic client's parked claim (the server's share); 0 = skip.
    #[arg(long, default_value_t = 100)]
    pub(crate) wake_samples: u32,
}

/// The worker's trace filter: its executor's debug events carry the spawn moment; nothing
/// else below `warn`, so the pipe stays quiet.
const WORKER_LOG: &str = "warn,rota_worker::executor=debug";

/// What the worker's trace said about one job.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// `running step`: the executor task started (the claim reply was in hand), µs.
    running_us: Option<i64>,
    /// `step started`: `spawned_unix_us`, taken right after the spawn returned.
    spawned_us: Option<i64>,
    /// `step started`: `spawn_call_unix_us`, taken just before the spawn was asked for (the
    /// moment the peers' harnesses stamp, just before they start `sh`).
    spawn_call_us: Option<i64>,
    /// `step ended`, µs.
    ended_us: Option<i64>,
    /// How many `step started` events named this job (more than one = it ran twice).
    spawns: u32,
}

type Trace = Arc<Mutex<HashMap<String, Seen>>>;

/// One measured submit.
struct Sent {
    id: JobId,
    /// How late the submit task started against its schedule (bench-side lag), µs.
    lag_us: i64,
    /// Just before the submit call.
    t0_us: i64,
    /// When the 201 arrived.
    t1_us: i64,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let mut c = BenchCluster::start(&args.rota).await?;
    let mut child = c
        .worker_command("bench", args.concurrency, &[], WORKER_LOG)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rota worker")?;
    let stderr = child.stderr.take().context("worker stderr")?;
    c.adopt_worker(child);
    let trace: Trace = Arc::default();
    // A plain thread: it must drain the pipe at once whatever the runtime is doing, or the
    // worker would block on a full pipe while writing its trace.
    let sink = trace.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            record_line(&sink, &line);
        }
    });
    c.wait_registered("bench").await?;

    // Warm-up: one at a time, each awaited, so the measured run starts from a worker that
    // has spawned before and pooled connections on both sides.
    let mut warm = Vec::new();
    for _ in 0..args.warmup {
        let id = c.client.submit(&shell_job("true"), None).await?.id;
        wait_spawned(&trace, &[id], Duration::from_secs(30)).await?;
        warm.push(id);
    }

    let sent = open_loop(&c, args.rate, args.samples).await?;
    let ids: Vec<JobId> = sent.iter().map(|s| s.id).collect();
    // Everything should have spawned within the schedule plus a generous margin.
    let margin = Duration::from_secs(60) + Duration::from_secs_f64(f64::from(args.samples) / args.rate);
    wait_spawned(&trace, &ids, margin).await?;
    let (wake, probed) = wake_path(&c, args.wake_samples).await?;
    let all: Vec<JobId> = warm.iter().chain(&ids).chain(&probed).copied().collect();
    let details = wait_finished(&c, &all, margin).await?;

    let trace = trace.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let ms = |us: i64| us as f64 / 1000.0;
    let mut to_spawn = Vec::new();
    let mut to_exec = Vec::new();
    let mut to_claimed = Vec::new();
    let mut claimed_to_spawn = Vec::new();
    let mut reply_to_claimed = Vec::new();
    let mut to_step_end = Vec::new();
    let mut to_done = Vec::new();
    let mut submit_call = Vec::new();
    let mut lag = Vec::new();
    for s in &sent {
        let seen = trace.get(&s.id.to_string()).cloned().unwrap_or_default();
        submit_call.push(ms(s.t1_us - s.t0_us));
        lag.push(ms(s.lag_us));
        if let Some(call) = seen.spawn_call_us {
            to_spawn.push(ms(call - s.t0_us));
        }
        if let Some(sp) = seen.spawned_us {
            to_exec.push(ms(sp - s.t0_us));
            if let Some(r) = seen.running_us {
                to_claimed.push(ms(r - s.t0_us));
                reply_to_claimed.push(ms(r - s.t1_us));
                claimed_to_spawn.push(ms(sp - r));
            }
        }
        if let Some(e) = seen.ended_us {
            to_step_end.push(ms(e - s.t0_us));
        }
        if let Some(f) = details.get(&s.id).and_then(|d| d.finished_us) {
            to_done.push(ms(f - s.t0_us));
        }
    }

    // Exactly once, from the server's records: every job succeeded with one attempt, the
    // worker spawned each once, and the counters agree.
    let total = all.len() as u64;
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    for id in &all {
        // The wake-path probe's jobs are run by no process: their one attempt is the record.
        let spawns = trace.get(&id.to_string()).map_or(0, |s| s.spawns);
        match details.get(id) {
            Some(d) if d.state == "succeeded" => {
                duplicated += u64::from(d.attempts.max(spawns).saturating_sub(1));
            }
            _ => lost += 1,
        }
    }
    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let lost = lost.max(total.saturating_sub(completed));
    let duplicated = duplicated.max(completed.saturating_sub(total)).max(claimed.saturating_sub(total));

    Ok(json!({
        "workload": "latency", "system": "rota",
        "rate": args.rate, "samples": args.samples, "concurrency": args.concurrency, "warmup": args.warmup,
        // Submit → the spawn call (what the peers measure: their stamp is just before they
        // start `sh`); and → the spawn returned (the child exec'd), stricter.
        "submit_to_spawn_ms": summary(&mut to_spawn),
        "submit_to_spawn_returned_ms": summary(&mut to_exec),
        "submit_call_ms_p50": p(&mut submit_call, 0.5),
        "submit_call_ms_p99": p(&mut submit_call, 0.99),
        "submit_to_done_ms_p50": p(&mut to_done, 0.5),
        "breakdown_ms_p50": {
            // The worker's executor task began (claim reply decoded); tracing's µs clock.
            "submit_to_worker_has_claim": p(&mut to_claimed, 0.5),
            // Negative when the worker had the claim before the submitter had its 201.
            "submit_reply_to_worker_has_claim": p(&mut reply_to_claimed, 0.5),
            "worker_claim_to_spawn": p(&mut claimed_to_spawn, 0.5),
            "submit_to_step_exit": p(&mut to_step_end, 0.5),
        },
        "breakdown_ms_p99": {
            "submit_to_worker_has_claim": p(&mut to_claimed, 0.99),
            "worker_claim_to_spawn": p(&mut claimed_to_spawn, 0.99),
        },
        // How late the bench itself started submit tasks: large values mean the bench, not
        // rota, was starved of CPU and the offered rate was not the one asked for.
        "schedule_lag_ms": {"p50": p(&mut lag, 0.5), "p99": p(&mut lag, 0.99), "max": p(&mut lag, 1.0)},
        "done_resolution_ms": 1,
        // The server alone: a synthetic protocol client's parked claim long-poll, answered
        // after a submit (one at a time, nothing else running); no worker, no spawn.
        "server_wake_path_ms": wake,
        "attempts_claimed": claimed, "completions": completed,
        "lost": lost, "duplicated": duplicated,
    }))
}

/// Submits `n` jobs at `rate`, each in its own task started on schedule, so a slow submit
/// delays nothing after it (open loop).
async fn open_loop(c: &BenchCluster, rate: f64, n: u32) -> Result<Vec<Sent>> {
    // Leave the scheduler a moment so the first arrival is not already late.
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(f64::from(i) / rate);
        tokio::time::sleep_until(due).await;
        let client = c.client.clone();
        tasks.push(tokio::spawn(async move {
            let lag_us = micros(tokio::time::Instant::now().saturating_duration_since(due));
            let t0_us = now_us();
            let r = client.submit(&shell_job("true"), None).await;
            let t1_us = now_us();
            r.map(|resp| Sent { id: resp.id, lag_us, t0_us, t1_us })
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.context("submit task panicked")?.context("submit refused")?);
    }
    Ok(sent)
}

/// The server's share of the latency: a synthetic protocol client (`WorkerClient`, on a
/// queue of its own so the real worker never competes) parks a claim long-poll; the bench
/// submits one job and times until that claim's reply is in hand, then completes it. One
/// at a time, so each submit finds the claim parked.
async fn wake_path(c: &BenchCluster, n: u32) -> Result<(Value, Vec<JobId>)> {
    if n == 0 {
        return Ok((Value::Null, Vec::new()));
    }
    let w = c.worker_client()?;
    let req = RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        namespace: rota_domain::namespace::default_owned(),
        protocol_minor: rota_domain::PROTOCOL_MINOR,
        name: "wake-probe".into(),
        host: "bench".into(),
        profile: None,
        version: env!("CARGO_PKG_VERSION").into(),
        queues: vec![PROBE_QUEUE.into()],
        tags: Vec::new(),
        concurrency: 1,
        capabilities: Vec::new(),
        pid: Some(std::process::id()),
        instance_id: None,
        replace: false,
    };
    w.register(&c.join_token, &req).await.context("registering the wake probe")?;
    let mut job = shell_job("true");
    job.queue = PROBE_QUEUE.into();
    let (mut to_claim, mut submit_call, mut reply_to_claim) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for _ in 0..n {
        let parked = w.clone();
        let claim = tokio::spawn(async move {
            let r = parked.claim(&ClaimRequest { max: 1, wait_ms: 5000 }).await;
            (r, now_us())
        });
        // Long enough for the claim to reach the server and find the queue empty.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = now_us();
        let id = c.client.submit(&job, None).await?.id;
        let t1 = now_us();
        let (got, t2) = claim.await.context("claim task panicked")?;
        let got = got.context("parked claim")?.attempts;
        let [a] = &got[..] else { bail!("the parked claim got {} attempts, not 1", got.len()) };
        if a.job_id != id {
            bail!("the parked claim got job {}, not {id}", a.job_id);
        }
        let item = CompleteItem {
            job_id: a.job_id,
            step: a.step.clone(),
            attempt_id: a.attempt_id,
            outcome: AttemptOutcome::Succeeded,
            logs: Vec::new(),
            dropped_bytes: 0,
            run_ms: None,
            outputs: Default::default(),
        };
        w.complete_batch(&CompleteBatchRequest { results: vec![item], claim: 0 }).await?;
        ids.push(id);
        to_claim.push((t2 - t0) as f64 / 1000.0);
        submit_call.push((t1 - t0) as f64 / 1000.0);
        reply_to_claim.push((t2 - t1) as f64 / 1000.0);
    }
    let v = json!({
        "samples": n,
        "submit_to_claim_reply": summary(&mut to_claim),
        "submit_call_p50": p(&mut submit_call, 0.5),
        // Negative when the claimer had its reply before the submitter had its 201.
        "submit_reply_to_claim_reply_p50": p(&mut reply_to_claim, 0.5),
    });
    Ok((v, ids))
}

/// The wake-path probe's queue.
const PROBE_QUEUE: &str = "wake-probe";

/// Waits until the worker's trace shows a spawn for every job in `ids`.
async fn wait_spawned(trace: &Trace, ids: &[JobId], limit: Duration) -> Result<()> {
    let keys: Vec<String> = ids.iter().map(JobId::to_string).collect();
    let until = Instant::now() + limit;
    loop {
        let missing = {
            let t = trace.lock().unwrap_or_else(PoisonError::into_inner);
            keys.iter().filter(|k| t.get(*k).is_none_or(|s| s.spawned_us.is_none())).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{missing} of {} jobs never spawned (per the worker's trace)", keys.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's record of one job.
struct Record {
    state: String,
    /// Attempts over all steps.
    attempts: u32,
    /// `finished_at` in µs (the store keeps milliseconds).
    finished_us: Option<i64>,
}

/// Waits until every job in `ids` has ended (or `limit` passed) and returns their records.
async fn wait_finished(c: &BenchCluster, ids: &[JobId], limit: Duration) -> Result<HashMap<JobId, Record>> {
    let until = Instant::now() + limit;
    let mut out = HashMap::with_capacity(ids.len());
    for &id in ids {
        loop {
            let d = c.client.get_job(id).await?;
            let ended = d.summary.finished_at.is_some();
            if ended || Instant::now() > until {
                let attempts = d.step_details.iter().map(|s| s.attempts.len() as u32).sum();
                let finished_us = d.summary.finished_at.map(|t| t.timestamp_micros());
                out.insert(id, Record { state: d.summary.state, attempts, finished_us });
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(out)
}

/// Files one line of the worker's trace, e.g.
/// `2026-01-02T03:04:05.123456Z DEBUG attempt{job_id=… step=s …}: rota_worker::executor: step started pid=1 spawned_unix_us=…`.
fn record_line(trace: &Trace, line: &str) {
    let Some(job) = field(line, "job_id=") else { return };
    let mut t = trace.lock().unwrap_or_else(PoisonError::into_inner);
    if line.contains(": step started") {
        let seen = t.entry(job.to_string()).or_default();
        seen.spawns += 1;
        seen.spawned_us = field(line, "spawned_unix_us=").and_then(|v| v.parse().ok());
        seen.spawn_call_us = field(line, "spawn_call_unix_us=").and_then(|v| v.parse().ok());
    } else if line.contains(": running step") {
        t.entry(job.to_string()).or_default().running_us = line_time_us(line);
    } else if line.contains(": step ended") {
        t.entry(job.to_string()).or_default().ended_us = line_time_us(line);
    }
}

/// The value of `key` in a trace line, up to the next space or brace.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split([' ', '}']).next()
}

/// The leading RFC 3339 UTC timestamp of a trace line, in µs since the epoch.
fn line_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    // Pad or cut the fraction to six digits (tracing prints six).
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    let us: i64 = frac.parse().ok()?;
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000 + us)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The `q` quantile (nearest rank) of `v`, in ms rounded to µs; `null` when empty.
fn p(v: &mut [f64], q: f64) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    json!((v[i.min(v.len() - 1)] * 1000.0).round() / 1000.0)
}

fn summary(v: &mut [f64]) -> Value {
    json!({"p50": p(v, 0.5), "p90": p(v, 0.9), "p99": p(v, 0.99), "max": p(v, 1.0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_worker_trace_line() {
        let trace: Trace = Arc::default();
        let id = "01a204c6-3d2e-703b-994b-d762d760f981";
        record_line(
            &trace,
            &format!(
                "2026-11-22T19:40:30.403283Z DEBUG attempt{{job_id={id} step=s attempt_id=1 attempt=1}}: \
                 rota_worker::executor: running step"
            ),
        );
        record_line(
            &trace,
            &format!(
                "2026-11-22T19:40:30.404554Z DEBUG attempt{{job_id={id} step=s attempt_id=1 attempt=1}}: \
                 rota_worker::executor: step started pid=11995 spawn_call_unix_us=1795376430404001 \
                 spawned_unix_us=1795376430404467"
            ),
        );
        let t = trace.lock().unwrap();
        let seen = &t[id];
        assert_eq!(seen.spawned_us, Some(1_795_376_430_404_467));
        assert_eq!(seen.spawn_call_us, Some(1_795_376_430_404_001));
        assert_eq!(seen.running_us, Some(1_795_376_430_403_283));
        assert_eq!(seen.spawns, 1);
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(line_time_us("1970-01-02T00:00:01.5Z x"), Some(86_401_500_000));
    }
}
