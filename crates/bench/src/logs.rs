//! `log-capture`: how fast step output reaches the server, and what streaming it costs the
//! rest of the work. This module owns three measurements and their verification:
//! - `big`: one step writes `--mb` MB; timed from submit until the server has recorded the
//!   job's end (the final chunks are stored before the result, so the log is complete then);
//! - `many`: `--steps` one-step jobs write 1 MB each, `--concurrency` at a time;
//! - `burn`: burn-down throughput of `--jobs` `true` jobs with and without a concurrent step
//!   streaming output on another worker.
//!
//! Every stored log is read back through the operator API and compared with what the step
//! wrote (length and SHA-256). The steps write a known stream: 1 MB records, each a 9-byte
//! index line (`%08d\n`) followed by one fixed pseudo-random block, so a record that is
//! lost, repeated or reordered changes the checksum, and the generator (`printf` and `cat`
//! of a cached file) costs the step almost no CPU.

use crate::cluster::BenchCluster;
use anyhow::{Context, Result, bail};
use rota_api_types::jobs::{ListJobsQuery, LogsQuery};
use rota_domain::{JobId, JobSpec, StepSpec, Stream};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
    /// Which measurement; `all` runs the three, each on a fresh server.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    pub(crate) mode: Mode,
    /// `big`: MB (10^6 bytes) written by the one step.
    #[arg(long, default_value_t = 200)]
    pub(crate) mb: u32,
    /// `many`: jobs of one step writing 1 MB each.
    #[arg(long, default_value_t = 100)]
    pub(crate) steps: u32,
    /// The worker's concurrency (`many` and the burn-down worker of `burn`).
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: u32,
    /// `burn`: `true` jobs burnt down, with and without the streaming step.
    #[arg(long, default_value_t = 5000)]
    pub(crate) jobs: u32,
    /// `burn`: MB/s the streaming step aims at; 0 = as fast as it can.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) stream_mb_per_s: f64,
    /// `burn`: log cap of the streaming step, MiB (the server keeps its tail).
    #[arg(long, default_value_t = 64)]
    pub(crate) stream_cap_mib: u64,
}

/// The measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    Big,
    Many,
    Burn,
    All,
}

/// One record of a step's output: the index line plus the block.
const RECORD: usize = 1_000_000;
/// `%08d\n`.
const HEADER: usize = 9;
/// Jobs per batch submit while queueing the burn-down.
const SUBMIT_BATCH: usize = 1000;
/// Any one phase is abandoned past this.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

pub(crate) async fn run(args: Args) -> Result<Value> {
    let mut out = json!({"workload": "log-capture", "system": "rota", "mode": format!("{:?}", args.mode).to_lowercase()});
    let mut lost = 0;
    let mut duplicated = 0;
    let parts: &[Mode] = match args.mode {
        Mode::All => &[Mode::Big, Mode::Many, Mode::Burn],
        Mode::Big => &[Mode::Big],
        Mode::Many => &[Mode::Many],
        Mode::Burn => &[Mode::Burn],
    };
    for &m in parts {
        let (name, v) = match m {
            Mode::Big => ("big", big(&args).await?),
            Mode::Many => ("many", many(&args).await?),
            Mode::Burn | Mode::All => ("burn", burn(&args).await?),
        };
        lost += v["lost"].as_u64().unwrap_or(0);
        duplicated += v["duplicated"].as_u64().unwrap_or(0);
        out[name] = v;
    }
    out["lost"] = json!(lost);
    out["duplicated"] = json!(duplicated);
    Ok(out)
}

/// One step writing `--mb` MB.
async fn big(args: &Args) -> Result<Value> {
    let mut c = BenchCluster::start(&args.rota).await?;
    c.launch_worker("logs", args.concurrency)?;
    c.wait_registered("logs").await?;
    let block = write_block(c.dir.path())?;
    let n = u64::from(args.mb);
    let bytes = n * RECORD as u64;
    let script = format!(
        "i=0; while [ \"$i\" -lt {n} ]; do printf '%08d\\n' \"$i\"; cat '{}'; i=$((i+1)); done",
        block.path.display()
    );
    // The default cap (64 MiB) would keep only the tail: leave room for all of it.
    let job = one_step_job("default", &script, Some(bytes + (1 << 20)));
    let (server0, worker0) = (c.server_cpu()?, c.worker_cpu()?);
    let start = Instant::now();
    let id = c.client.submit(&job, None).await?.id;
    let (secs, state) = wait_job_end(&c, id, Duration::from_millis(10), start).await?;
    let (server1, worker1) = (c.server_cpu()?, c.worker_cpu()?);
    let received = c.metric("rota_log_bytes_total").await?;

    let expected = block.sha256_of(0..n).await?;
    let read_start = Instant::now();
    let got = read_back(&c, id).await?;
    let read_secs = read_start.elapsed().as_secs_f64();
    let attempts = attempts_of(&c, id).await?;
    let ok = got.stdout_bytes == bytes && got.sha256 == expected && got.other_bytes == 0 && got.cut == 0;
    let (lost, duplicated) = exactly_once(&state, attempts, got.stdout_bytes, bytes);
    Ok(json!({
        "mb": args.mb, "bytes": bytes, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs,
        "server_cpu_s": server1.own - server0.own,
        "worker_cpu_s": worker1.own - worker0.own, "step_cpu_s": worker1.children - worker0.children,
        "stored_bytes": got.stdout_bytes, "sha256": got.sha256, "sha256_expected": expected,
        "checksum_ok": ok, "bytes_received": received, "bytes_resent": received.saturating_sub(bytes),
        "readback_mb_per_s": got.stdout_bytes as f64 / 1e6 / read_secs,
        "state": state, "attempts": attempts, "lost": lost, "duplicated": duplicated,
    }))
}

/// `--steps` jobs of 1 MB each, submitted together.
async fn many(args: &Args) -> Result<Value> {
    let mut c = BenchCluster::start(&args.rota).await?;
    c.launch_worker("logs", args.concurrency)?;
    c.wait_registered("logs").await?;
    let block = write_block(c.dir.path())?;
    let jobs: Vec<JobSpec> = (0..args.steps)
        .map(|j| {
            let script = format!("printf '%08d\\n' {j}; cat '{}'", block.path.display());
            one_step_job("default", &script, None)
        })
        .collect();
    let total = u64::from(args.steps) * RECORD as u64;
    let (server0, worker0) = (c.server_cpu()?, c.worker_cpu()?);
    let start = Instant::now();
    let mut ids = Vec::with_capacity(jobs.len());
    for part in jobs.chunks(SUBMIT_BATCH) {
        for r in c.client.submit_batch(part).await?.results {
            ids.push(r.result.filter(|_| r.status == 201).context("a batch submit was refused")?.id);
        }
    }
    wait_completions(&c, u64::from(args.steps), Duration::from_millis(10)).await?;
    let secs = start.elapsed().as_secs_f64();
    let (server1, worker1) = (c.server_cpu()?, c.worker_cpu()?);
    let received = c.metric("rota_log_bytes_total").await?;

    let (mut ok_count, mut stored, mut lost, mut duplicated) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for (j, &id) in ids.iter().enumerate() {
        let j = j as u64;
        let expected = block.sha256_of(j..j + 1).await?;
        let got = read_back(&c, id).await?;
        let state = c.client.get_job(id).await?.summary.state;
        let attempts = attempts_of(&c, id).await?;
        stored += got.stdout_bytes;
        let ok = got.stdout_bytes == RECORD as u64 && got.sha256 == expected && got.other_bytes == 0;
        if ok {
            ok_count += 1;
        } else if bad.len() < 5 {
            bad.push(json!({"job": id.to_string(), "bytes": got.stdout_bytes, "state": state}));
        }
        let (l, d) = exactly_once(&state, attempts, got.stdout_bytes, RECORD as u64);
        lost += l;
        duplicated += d;
    }
    Ok(json!({
        "steps": args.steps, "concurrency": args.concurrency, "bytes": total, "seconds": secs,
        "mb_per_s": total as f64 / 1e6 / secs, "jobs_per_s": f64::from(args.steps) / secs,
        "server_cpu_s": server1.own - server0.own,
        "worker_cpu_s": worker1.own - worker0.own, "step_cpu_s": worker1.children - worker0.children,
        "stored_bytes": stored, "checksums_ok": ok_count, "checksum_ok": ok_count == u64::from(args.steps),
        "mismatches": bad, "bytes_received": received, "bytes_resent": received.saturating_sub(total),
        "lost": lost, "duplicated": duplicated,
    }))
}

/// Burn-down with and without a streaming neighbour; each on a fresh server.
async fn burn(args: &Args) -> Result<Value> {
    let quiet = burn_once(args, false).await?;
    let loud = burn_once(args, true).await?;
    let rate = |v: &Value| v["per_s"].as_f64().unwrap_or(f64::NAN);
    let sum = |k: &str| quiet[k].as_u64().unwrap_or(0) + loud[k].as_u64().unwrap_or(0);
    Ok(json!({
        "jobs": args.jobs, "concurrency": args.concurrency,
        "stream_mb_per_s_target": if args.stream_mb_per_s > 0.0 { json!(args.stream_mb_per_s) } else { json!("max") },
        "without_stream_per_s": rate(&quiet), "with_stream_per_s": rate(&loud),
        "ratio": rate(&loud) / rate(&quiet),
        "without": quiet, "with": loud,
        "lost": sum("lost"), "duplicated": sum("duplicated"),
    }))
}

/// One burn-down: `--jobs` queued while their queue is paused, timed from its resume until
/// the server has recorded every completion. With `stream`, a second worker (own queue, one
/// slot) first runs a step writing output without end; it is cancelled afterwards.
async fn burn_once(args: &Args, stream: bool) -> Result<Value> {
    let mut c = BenchCluster::start(&args.rota).await?;
    c.launch_worker("burn", args.concurrency)?;
    if stream {
        // Its own worker, so the burn-down worker keeps all its slots in both runs and the
        // difference is what the server (and the machine) pays for the stream.
        c.launch_worker_with("streamer", 1, &["--queue", "logs"])?;
        c.wait_registered("streamer").await?;
    }
    c.wait_registered("burn").await?;
    c.client.set_queue_paused("default", true).await?;
    let batch: Vec<JobSpec> = (0..SUBMIT_BATCH).map(|_| one_step_job("default", "true", None)).collect();
    let mut queued = 0u32;
    while queued < args.jobs {
        let n = (args.jobs - queued).min(SUBMIT_BATCH as u32) as usize;
        let r = c.client.submit_batch(&batch[..n]).await?;
        if r.results.iter().any(|i| i.status != 201) {
            bail!("a batch submit was refused");
        }
        queued += n as u32;
    }
    let mut streamer = None;
    if stream {
        let block = write_block(c.dir.path())?;
        let pause = if args.stream_mb_per_s > 0.0 {
            format!(" sleep {:.4};", 1.0 / args.stream_mb_per_s)
        } else {
            String::new()
        };
        let script = format!("while :; do cat '{}';{pause} done", block.path.display());
        let job = one_step_job("logs", &script, Some(args.stream_cap_mib << 20));
        let id = c.client.submit(&job, None).await?.id;
        // Measure only once output is really flowing.
        let until = Instant::now() + Duration::from_secs(30);
        while c.metric("rota_log_bytes_total").await? < 4 * RECORD as u64 {
            if Instant::now() > until {
                bail!("the streaming step wrote nothing in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        streamer = Some(id);
    }
    let (server0, worker0) = (c.server_cpu()?, c.worker_cpu()?);
    let bytes0 = c.metric("rota_log_bytes_total").await?;
    let start = Instant::now();
    c.client.set_queue_paused("default", false).await?;
    // /metrics is not free for the server: poll it gently.
    wait_completions(&c, u64::from(args.jobs), Duration::from_millis(50)).await?;
    let secs = start.elapsed().as_secs_f64();
    let bytes1 = c.metric("rota_log_bytes_total").await?;
    let (server1, worker1) = (c.server_cpu()?, c.worker_cpu()?);

    let mut streamer_state = None;
    if let Some(id) = streamer {
        c.client.cancel_job(id).await?;
        let (_, state) = wait_job_end(&c, id, Duration::from_millis(20), Instant::now()).await?;
        streamer_state = Some(state);
    }
    let claimed = c.metric("rota_attempts_claimed_total").await?;
    let completed = c.metric("rota_attempts_completed_total").await?;
    let extra = u64::from(stream);
    let jobs = u64::from(args.jobs);
    let q = ListJobsQuery {
        state: Some("queued,unschedulable,running,failed,cancelled,revoked".into()),
        queue: Some("default".into()),
        limit: Some(1000),
        ..ListJobsQuery::default()
    };
    let not_succeeded = c.client.list_jobs(&q).await?.jobs.len() as u64;
    Ok(json!({
        "stream": stream, "seconds": secs, "per_s": f64::from(args.jobs) / secs,
        "stream_mb_per_s": (bytes1 - bytes0) as f64 / 1e6 / secs,
        "server_cpu_s": server1.own - server0.own,
        "burn_worker_cpu_s": worker1.own - worker0.own,
        "streamer_state": streamer_state,
        "attempts_claimed": claimed, "completions": completed, "not_succeeded": not_succeeded,
        "lost": (jobs + extra).saturating_sub(completed).max(not_succeeded),
        "duplicated": completed.saturating_sub(jobs + extra).max(claimed.saturating_sub(jobs + extra)),
    }))
}

/// A job of one step named `s` running `script`.
fn one_step_job(queue: &str, script: &str, log_cap: Option<u64>) -> JobSpec {
    let mut step = StepSpec::new("s", script);
    step.log_cap = log_cap;
    JobSpec { queue: queue.into(), ..JobSpec::new(vec![step]) }
}

/// The block every record repeats, on disk for the steps and in memory for the checks.
struct Block {
    path: PathBuf,
    data: Vec<u8>,
}

/// Writes the block (deterministic pseudo-random bytes: xorshift64*, fixed seed).
fn write_block(dir: &Path) -> Result<Block> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..RECORD - HEADER)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect();
    let path = dir.join("block.bin");
    std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(Block { path, data })
}

impl Block {
    /// SHA-256 of records `range` as the steps write them.
    async fn sha256_of(&self, range: std::ops::Range<u64>) -> Result<String> {
        let mut h = Sha256Pipe::start()?;
        for i in range {
            h.write(format!("{i:08}\n").as_bytes()).await?;
            h.write(&self.data).await?;
        }
        h.finish().await
    }
}

/// `sha256sum` fed through a pipe: streams any length without holding it, and is the
/// reference implementation rather than one of our own.
struct Sha256Pipe {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl Sha256Pipe {
    fn start() -> Result<Self> {
        let mut child = tokio::process::Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting sha256sum")?;
        let stdin = child.stdin.take().context("sha256sum stdin")?;
        Ok(Self { child, stdin })
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.stdin.write_all(data).await.context("feeding sha256sum")
    }

    async fn finish(self) -> Result<String> {
        drop(self.stdin);
        let out = self.child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.split_whitespace().next() {
            Some(hex) if out.status.success() && hex.len() == 64 => Ok(hex.to_string()),
            _ => bail!("sha256sum failed: {text}"),
        }
    }
}

/// A job's stored log as read back.
struct ReadBack {
    stdout_bytes: u64,
    sha256: String,
    /// Bytes on stderr (the steps write none).
    other_bytes: u64,
    /// Bytes the log cap cut.
    cut: u64,
}

/// Reads a finished job's whole log through `GET /api/v1/jobs/{id}/logs`, page by page.
async fn read_back(c: &BenchCluster, id: JobId) -> Result<ReadBack> {
    let mut h = Sha256Pipe::start()?;
    let (mut stdout_bytes, mut other_bytes, mut cut) = (0u64, 0u64, 0u64);
    let mut after = 0;
    loop {
        let q = LogsQuery { after: Some(after), max_bytes: Some(32 << 20), ..LogsQuery::default() };
        let page = c.client.job_logs(id, &q).await?;
        for ch in &page.chunks {
            if ch.stream == Stream::Stdout {
                stdout_bytes += ch.data.0.len() as u64;
                h.write(&ch.data.0).await?;
            } else {
                other_bytes += ch.data.0.len() as u64;
            }
        }
        cut = page.truncated.iter().map(|t| t.cut_bytes).sum::<u64>().max(cut);
        if page.done {
            break;
        }
        if page.chunks.is_empty() {
            bail!("job {id}: log read stalled at cursor {after} before its end");
        }
        after = page.next_cursor;
    }
    Ok(ReadBack { stdout_bytes, sha256: h.finish().await?, other_bytes, cut })
}

/// Attempts recorded for the job, over its steps.
async fn attempts_of(c: &BenchCluster, id: JobId) -> Result<u32> {
    let d = c.client.get_job(id).await?;
    Ok(d.step_details.iter().map(|s| s.attempts.len() as u32).sum())
}

/// `(lost, duplicated)` for one job: it must have succeeded with one attempt and exactly
/// the expected bytes (fewer = output lost, more = output stored twice).
fn exactly_once(state: &str, attempts: u32, stored: u64, expected: u64) -> (u64, u64) {
    let lost = u64::from(state != "succeeded" || stored < expected);
    let duplicated = u64::from(attempts > 1 || stored > expected);
    (lost, duplicated)
}

/// Polls the job until it has ended; returns the seconds since `start` and its state.
async fn wait_job_end(c: &BenchCluster, id: JobId, every: Duration, start: Instant) -> Result<(f64, String)> {
    loop {
        let d = c.client.get_job(id).await?;
        if d.summary.finished_at.is_some() {
            return Ok((start.elapsed().as_secs_f64(), d.summary.state));
        }
        if start.elapsed() > PHASE_LIMIT {
            bail!("job {id} did not end in {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `/metrics` until `n` completions are recorded.
async fn wait_completions(c: &BenchCluster, n: u64, every: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let done = c.metric("rota_attempts_completed_total").await?;
        if done >= n {
            return Ok(());
        }
        if start.elapsed() > PHASE_LIMIT {
            bail!("only {done} of {n} completions in {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(every).await;
    }
}
