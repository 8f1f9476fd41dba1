//! One attempt from claim to result: attempt directory, spawn, durable pgid record,
//! output pumping, timeout and stop orders (TERM → grace → KILL on the group), no orphans
//! after `sh` exits, cleanup, and the outcome. It never talks to the server directly
//! except for the optional, deferred `start` call; results go to the reporter.

use crate::attempts::StopKind;
use crate::context::Ctx;
use crate::handover::HandedSlot;
use crate::kill;
use crate::logship::LogShip;
use crate::mask::Masker;
use crate::spawn::{self, BaseEnv};
use crate::spawner::{SpawnedStep, Spawner, StepExit};
use crate::workspace::AttemptDirs;
use rota_api_types::worker::{ClaimedStep, CompleteItem, StartRequest, Stream};
use rota_domain::workflow::OutputError;
use rota_domain::{AttemptId, AttemptOutcome};
use rustix::process::{Pid, Signal};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

/// How long output pipes may stay open after the group was killed (something escaped it).
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// Steps still running after this long get their pid reported (`start` call); shorter
/// ones cost no extra request.
const START_REPORT_AFTER: Duration = Duration::from_secs(1);

/// What an attempt needs from its worker, apart from the server.
pub(crate) struct Setup<'a> {
    /// The attempt directories.
    pub(crate) dirs: &'a AttemptDirs,
    /// Spawns the step and journals its process group.
    pub(crate) spawner: &'a Spawner,
    /// Inherited PATH/HOME/LANG/TZ.
    pub(crate) base_env: &'a BaseEnv,
    /// Values a step's env must not carry.
    pub(crate) secrets: &'a [&'a str],
    /// The worker configs' variables, and `ROTA_CONFIG_DIR` (the job's env wins).
    pub(crate) host_env: &'a [(String, String)],
    /// Values the worker configs gave from secrets: masked in the step's output.
    pub(crate) host_secrets: &'a [Vec<u8>],
    /// For a job naming a project: where that project lives on this host (`Err`: the
    /// project it names, which this worker does not map).
    pub(crate) project_dir: Option<Result<std::path::PathBuf, String>>,
    /// TERM → KILL grace.
    pub(crate) kill_grace: Duration,
}

/// Callbacks from a running attempt.
pub(crate) trait Hooks: Send + Sync {
    /// The step's group was spawned and recorded (`Some`), or is gone (`None`).
    fn group(&self, pgid: Option<Pid>);
    /// The step has been running for a while: its pid is worth reporting.
    fn long_running(&self, pid: u32);
}

/// How the attempt ended as far as the worker decided it (else the exit status decides).
enum Ending {
    Report(AttemptOutcome),
    /// The session is gone: report nothing.
    Silent,
}

/// Runs one attempt to its end. `None` = nothing to report (the session was superseded).
/// Everything happens on this one task (output included): per step, hand-offs between
/// tasks and threads cost more than the work they carried.
pub(crate) async fn run_attempt(
    step: &ClaimedStep,
    setup: &Setup<'_>,
    logs: &LogShip,
    mut stop_rx: mpsc::UnboundedReceiver<StopKind>,
    hooks: &dyn Hooks,
) -> Option<Ended> {
    let keep = step.keep_workspace;
    let dir = match setup.dirs.acquire(step.attempt_id) {
        Ok(dir) => dir,
        Err(e) => return Some(lost(format!("cannot create the attempt directory: {e}")).into()),
    };
    let cwd = match &setup.project_dir {
        None => dir.path().to_path_buf(),
        Some(Ok(p)) => p.clone(),
        Some(Err(project)) => {
            setup.dirs.release(dir, keep, true).await;
            let why = format!(
                "this worker does not map project '{project}' (its worker configs changed meanwhile)"
            );
            return Some(AttemptOutcome::Failed { exit_code: None, signal: None, why: Some(why) }.into());
        }
    };
    let mut env = spawn::build_env(setup.base_env, setup.host_env, step, setup.secrets);
    let output_file = setup.dirs.output_file(step.attempt_id);
    env.push((rota_domain::workflow::OUTPUT_FILE_ENV.into(), output_file.clone().into_os_string()));
    // The kernel refuses an exec over its argument limits (E2BIG): that is the step's
    // input, not a lost worker, so it fails with the reason instead of being retried as
    // `lost` (a server older than the API limits may hand out such a step).
    if let Err(e) = spawn::check_exec_limits(step, &env) {
        setup.dirs.release(dir, keep, true).await;
        return Some(AttemptOutcome::Failed { exit_code: None, signal: None, why: Some(e) }.into());
    }
    // When the spawn was asked for: the moment peers' harnesses stamp (just before they
    // start `sh`); `spawned_at` below is after the kernel has exec'd it.
    let spawn_call = std::time::SystemTime::now();
    let args = vec!["-c".into(), step.run.clone().into()];
    // The helper journals the group before it answers: from here on, a kill of this
    // worker at any moment leaves no process of the step behind.
    // A project's steps run in its directory (shared by concurrent jobs of the project);
    // the attempt directory still holds `$ROTA_OUTPUT` and is cleaned as always.
    let sp = match setup.spawner.spawn(step.attempt_id, spawn::SHELL, args, env, &cwd).await {
        Ok(sp) => sp,
        Err(e) => {
            setup.dirs.release(dir, keep, true).await;
            return Some(lost(format!("cannot start sh: {e}")).into());
        }
    };
    let spawned_at = std::time::SystemTime::now();
    let SpawnedStep { pid, stdout, stderr, exit: mut child, .. } = sp;
    let Some(pgid) = Pid::from_raw(pid) else { return Some(lost("spawned step has pid 0".into()).into()) };
    hooks.group(Some(pgid));
    // The wall-clock moment of the spawn, for latency measurements that compare it with a
    // submitter's clock on the same host (bench/run); microseconds since the Unix epoch.
    let unix_us =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let (spawn_call_unix_us, spawned_unix_us) = (unix_us(spawn_call), unix_us(spawned_at));
    tracing::debug!(pid, spawn_call_unix_us, spawned_unix_us, "step started");

    // Every secret value the step holds: masked in its output, refused in its outputs.
    let masked = secret_values(step, setup.host_secrets);
    let mut output = Output::new(stdout, stderr, logs, step.attempt_id, &masked);
    let (status, ending) =
        supervise(&mut child, pgid, step, setup.kill_grace, &mut stop_rx, &mut output, hooks).await;
    // The spawner saw the group empty once it had reaped the shell (almost every step): a
    // group with no member cannot gain one, so there is nothing to kill or wait for, and
    // its id may already name someone else's new group (pid reuse): it is left alone.
    let emptied = child.released();
    // No orphans: whatever is left of the group dies with its shell.
    if !emptied {
        kill::kill_group(pgid);
    }
    let drained = tokio::time::timeout(PIPE_DRAIN, output.drain()).await.is_ok();
    if !drained {
        tracing::warn!(
            "output pipe still open {PIPE_DRAIN:?} after the step's group was killed; stopped reading"
        );
    }
    output.flush();
    drop(output);
    let gone = emptied || kill::wait_group_gone(pgid, Instant::now() + Duration::from_millis(500)).await;
    hooks.group(None);
    // Almost always the spawner forgot the group when its leader exited (it was empty);
    // otherwise it kills what is left (if provably the step's) and forgets it once empty.
    if !child.released()
        && let Err(e) = setup.spawner.release(step.attempt_id)
    {
        tracing::warn!("cannot journal the end of the step's process group: {e}");
    }
    // A process that escaped the group and still holds a pipe may also still use the
    // directory: it is then removed, never handed to another attempt.
    setup.dirs.release(dir, keep, drained && gone).await;
    let outputs = read_outputs(&output_file).await.map_err(Refused::Output).and_then(|o| {
        match o.iter().find(|(_, v)| crate::mask::contains_any(v, &masked)) {
            Some((k, _)) => Err(Refused::Secret(k.clone())),
            None => Ok(o),
        }
    });
    let outcome = match ending {
        Some(Ending::Silent) => return None,
        Some(Ending::Report(o)) => o,
        None => match status {
            Ok(st) => outcome_of(st),
            Err(e) => lost(format!("cannot wait for the step: {e}")),
        },
    };
    Some(match (outcome, outputs) {
        (AttemptOutcome::Succeeded, Ok(outputs)) => Ended { outcome: AttemptOutcome::Succeeded, outputs },
        // Outputs a later step cannot be given make the step fail, saying why.
        (AttemptOutcome::Succeeded, Err(e)) => Ended {
            outcome: AttemptOutcome::Failed { exit_code: Some(0), signal: None, why: Some(e.to_string()) },
            outputs: BTreeMap::new(),
        },
        (other, _) => Ended { outcome: other, outputs: BTreeMap::new() },
    })
}

/// Why a succeeded step's `$ROTA_OUTPUT` cannot be passed on.
enum Refused {
    Output(OutputError),
    /// The value of this key holds a secret value.
    Secret(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Output(e) => e.fmt(f),
            Refused::Secret(key) => rota_domain::Reason::SecretInOutput { key: key.clone() }.fmt(f),
        }
    }
}

/// The values a secret gave the step: its own variables' (the server names them) and the
/// worker configs'.
fn secret_values(step: &ClaimedStep, host: &[Vec<u8>]) -> Vec<Vec<u8>> {
    step.secret_env
        .iter()
        .filter_map(|k| step.env.get(k).map(|v| v.as_bytes().to_vec()))
        .chain(host.iter().cloned())
        .collect()
}

/// How an attempt ended, with what it wrote to `$ROTA_OUTPUT` if it succeeded.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) outcome: AttemptOutcome,
    pub(crate) outputs: BTreeMap<String, String>,
}

impl From<AttemptOutcome> for Ended {
    fn from(outcome: AttemptOutcome) -> Self {
        Ended { outcome, outputs: BTreeMap::new() }
    }
}

/// Reads and removes the attempt's `$ROTA_OUTPUT` file (none written: no outputs). Only a
/// plain file is read, and at most one byte past the cap: a symbolic link is not followed
/// (`/dev/zero`, another user's file) and a FIFO or device is refused, so a step cannot make
/// the worker read forever or block.
///
/// Almost no step writes one: a single `open` here, on the executor's own thread, tells so
/// (a failed lookup does not block), and only a file that exists is read and removed on a
/// blocking thread. A task hand-off per step cost more than the open itself.
async fn read_outputs(path: &std::path::Path) -> Result<BTreeMap<String, String>, OutputError> {
    let file = match open_plain(path) {
        // `NOFOLLOW`: a link, even a dangling one, is not "not found": nothing to remove.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        other => other,
    };
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let result = read_plain_file(file);
        let removed = match std::fs::symlink_metadata(&owned) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&owned),
            Ok(_) => std::fs::remove_file(&owned),
            Err(_) => Ok(()),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %owned.display(), "cannot remove the step's output file: {e}");
        }
        result
    })
    .await
    .unwrap_or_else(|e| Err(OutputError::Unreadable(format!("the reading task failed: {e}"))))
}

/// Opens `$ROTA_OUTPUT` without following a link and without blocking on a FIFO.
fn open_plain(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    std::fs::OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path)
}

fn read_plain_file(file: std::io::Result<std::fs::File>) -> Result<BTreeMap<String, String>, OutputError> {
    use std::io::Read;
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(OutputError::Unreadable(format!("{e} (it must be a plain file, not a link)"))),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(OutputError::Unreadable("it is not a plain file".into())),
        Err(e) => return Err(OutputError::Unreadable(e.to_string())),
    }
    let mut bytes = Vec::new();
    file.take(rota_domain::workflow::MAX_OUTPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OutputError::Unreadable(e.to_string()))?;
    rota_domain::workflow::parse_outputs(&bytes)
}

fn lost(why: String) -> AttemptOutcome {
    AttemptOutcome::Lost { why }
}

/// Exit 0 → succeeded; other code → failed with it; signal → failed with it.
pub(crate) fn outcome_of(status: ExitStatus) -> AttemptOutcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => AttemptOutcome::Succeeded,
        (Some(code), _) => AttemptOutcome::Failed { exit_code: Some(code), signal: None, why: None },
        (None, signal) => AttemptOutcome::Failed { exit_code: None, signal, why: None },
    }
}

/// What a stop request means: `Some(signal)` = gentle (signal, grace, KILL), `None` =
/// KILL at once; and how the attempt ends.
fn plan(kind: StopKind) -> (Option<Signal>, Ending) {
    match kind {
        StopKind::NotHeld => (None, Ending::Report(lost("not held".into()))),
        StopKind::Fence => (None, Ending::Report(lost("self-fenced: lease not renewed".into()))),
        StopKind::Memory => (None, Ending::Report(AttemptOutcome::Memory)),
        StopKind::Superseded => (None, Ending::Silent),
        StopKind::Cancel(sig) => (Some(sig), Ending::Report(AttemptOutcome::Cancelled)),
        StopKind::Shutdown => (Some(Signal::TERM), Ending::Report(lost("worker shut down".into()))),
        StopKind::HardShutdown => (None, Ending::Report(lost("worker shut down".into()))),
    }
}

/// Waits for the shell while copying its output and acting on the timeout and stop
/// requests.
async fn supervise(
    child: &mut StepExit,
    pgid: Pid,
    step: &ClaimedStep,
    grace: Duration,
    stop_rx: &mut mpsc::UnboundedReceiver<StopKind>,
    output: &mut Output<'_>,
    hooks: &dyn Hooks,
) -> (std::io::Result<ExitStatus>, Option<Ending>) {
    let started = Instant::now();
    // Timers are armed once (a disabled branch never registers its timer).
    let timeout = tokio::time::sleep_until(started + Duration::from_millis(step.timeout_ms.unwrap_or(0)));
    let report = tokio::time::sleep_until(started + START_REPORT_AFTER);
    tokio::pin!(timeout, report);
    let mut reported = false;
    let mut ending: Option<Ending> = None;
    let gentle = loop {
        tokio::select! {
            biased;
            status = child.wait() => {
                // A kill the worker decided on elsewhere (self-fencing) is queued before its
                // signal is sent: the step's death by that signal is the worker's, not its own.
                let killed = status.as_ref().is_ok_and(|s| s.signal().is_some());
                while let Ok(kind) = stop_rx.try_recv() {
                    let (_, outcome) = plan(kind);
                    if killed || matches!(outcome, Ending::Silent) {
                        ending = Some(outcome);
                    }
                }
                return (status, ending);
            }
            Some(kind) = stop_rx.recv() => match plan(kind) {
                (Some(sig), outcome) if ending.is_none() => {
                    ending = Some(outcome);
                    break sig;
                }
                (Some(_), _) => {}
                (None, outcome) => {
                    // KILL now, then keep waiting for the shell to be reaped.
                    kill::kill_group(pgid);
                    if !matches!(ending, Some(Ending::Silent)) {
                        ending = Some(outcome);
                    }
                }
            },
            () = output.read_some(true), if output.is_open() => {}
            () = &mut timeout, if ending.is_none() && step.timeout_ms.is_some() => {
                tracing::info!(timeout_ms = step.timeout_ms, "step timed out: stopping its process group");
                ending = Some(Ending::Report(AttemptOutcome::Timeout));
                break Signal::TERM;
            }
            () = &mut report, if !reported => {
                reported = true;
                hooks.long_running(pgid.as_raw_nonzero().get().unsigned_abs());
            }
        }
    };
    // Signal, grace, KILL; a later order that must not wait (not held, fenced, memory,
    // superseded) cuts the grace short and decides the ending. Output is still copied.
    let hurry = async {
        let mut orders = true;
        loop {
            tokio::select! {
                kind = stop_rx.recv(), if orders => match kind {
                    Some(kind) => {
                        if let (None, outcome) = plan(kind) {
                            if !matches!(ending, Some(Ending::Silent)) {
                                ending = Some(outcome);
                            }
                            return;
                        }
                    }
                    None => orders = false,
                },
                () = output.read_some(true), if output.is_open() => {}
                else => std::future::pending::<()>().await,
            }
        }
    };
    let status = kill::terminate_group(pgid, gentle, grace, child, hurry).await;
    (status, ending)
}

/// Bytes read from a pipe at once.
const READ_SIZE: usize = 64 * 1024;

/// A step's two output pipes, copied into the log buffer as raw bytes.
struct Output<'a> {
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    /// Read buffer, allocated on first output (most steps print little or nothing).
    buf: Vec<u8>,
    /// Which pipe is looked at first next time, so neither starves the other.
    stderr_first: bool,
    logs: &'a LogShip,
    id: AttemptId,
    /// Per stream (stdout, stderr): masks the step's secret values before they are sent.
    masks: [Masker; 2],
}

impl<'a> Output<'a> {
    fn new(
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        logs: &'a LogShip,
        id: AttemptId,
        secrets: &[Vec<u8>],
    ) -> Self {
        let masks = [Masker::new(secrets.iter().cloned()), Masker::new(secrets.iter().cloned())];
        Self {
            stdout: Some(stdout),
            stderr: Some(stderr),
            buf: Vec::new(),
            stderr_first: false,
            logs,
            id,
            masks,
        }
    }

    /// Sends what the maskers still hold back (a stream that reached its end already did).
    fn flush(&mut self) {
        for (mask, stream) in self.masks.iter_mut().zip([Stream::Stdout, Stream::Stderr]) {
            let mut out = Vec::new();
            mask.finish(&mut out);
            if !out.is_empty() {
                self.logs.push(self.id, stream, &out);
            }
        }
    }

    fn is_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Waits until a pipe has output (buffered here) or reaches its end (closed here).
    /// Cancel-safe: what was read is buffered before it returns. Pending while both pipes
    /// are closed. With `hold`, first waits while the attempt has as much unsent output as
    /// the log shipper holds back for (`LogShip::room_for`): a step writing faster than
    /// its output is stored then waits in `write(2)`; none of its bytes is lost.
    async fn read_some(&mut self, hold: bool) {
        if hold {
            self.logs.room_for(self.id).await;
        }
        std::future::poll_fn(|cx| {
            let Self { stdout, stderr, buf, stderr_first, logs, id, masks } = &mut *self;
            let [out_mask, err_mask] = masks;
            *stderr_first = !*stderr_first;
            for round in [*stderr_first, !*stderr_first] {
                let progress = if round {
                    poll_pipe(stderr, Stream::Stderr, cx, buf, logs, *id, err_mask)
                } else {
                    poll_pipe(stdout, Stream::Stdout, cx, buf, logs, *id, out_mask)
                };
                if progress.is_some() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Copies until both pipes are closed. Not held back: the group is gone, what is left
    /// is at most what the pipes hold, and the drain has a deadline that must not cut it.
    async fn drain(&mut self) {
        while self.is_open() {
            self.read_some(false).await;
        }
    }
}

/// Polls one pipe; `Some` when it made progress (output buffered, or the pipe closed).
fn poll_pipe<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    stream: Stream,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
    logs: &LogShip,
    id: AttemptId,
    mask: &mut Masker,
) -> Option<()> {
    let reader = pipe.as_mut()?;
    if buf.capacity() < READ_SIZE {
        buf.reserve_exact(READ_SIZE);
    }
    buf.clear();
    let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
    match Pin::new(reader).poll_read(cx, &mut rb) {
        Poll::Pending => None,
        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
            *pipe = None;
            let mut out = Vec::new();
            mask.finish(&mut out);
            if !out.is_empty() {
                logs.push(id, stream, &out);
            }
            Some(())
        }
        Poll::Ready(Ok(())) if mask.is_empty() => {
            logs.push(id, stream, rb.filled());
            Some(())
        }
        Poll::Ready(Ok(())) => {
            let mut out = Vec::with_capacity(rb.filled().len());
            mask.push(rb.filled(), &mut out);
            if !out.is_empty() {
                logs.push(id, stream, &out);
            }
            Some(())
        }
        Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
            cx.waker().wake_by_ref();
            None
        }
        Poll::Ready(Err(e)) => {
            tracing::warn!(?stream, "cannot read step output: {e}");
            *pipe = None;
            Some(())
        }
    }
}

/// The worker's hooks: keep the held table's pgid current; report long steps' pids.
struct CtxHooks<'a> {
    ctx: &'a Arc<Ctx>,
    step: &'a ClaimedStep,
}

impl Hooks for CtxHooks<'_> {
    fn group(&self, pgid: Option<Pid>) {
        self.ctx.attempts.set_pgid(self.step.attempt_id, pgid);
    }

    fn long_running(&self, pid: u32) {
        let ctx = self.ctx.clone();
        let (job_id, step, attempt_id) = (self.step.job_id, self.step.step.clone(), self.step.attempt_id);
        tokio::spawn(
            async move {
                if let Err(e) = ctx.client.start(job_id, &step, &StartRequest { attempt_id, pid }).await {
                    tracing::debug!("pid report not recorded: {e}");
                }
            }
            .in_current_span(),
        );
    }
}

/// Runs a claimed attempt on the worker and queues its result. `slot` is released as soon
/// as the step's processes are gone, unless the result may claim for it (see
/// `handover.rs`): then it goes with the result.
pub(crate) async fn execute(
    ctx: Arc<Ctx>,
    step: ClaimedStep,
    stop_rx: mpsc::UnboundedReceiver<StopKind>,
    slot: Option<OwnedSemaphorePermit>,
) {
    let span = tracing::info_span!("attempt", job_id = %step.job_id, step = %step.step,
        attempt_id = %step.attempt_id, attempt = step.attempt);
    let logs = ctx.logship.clone();
    // The step's own run time, from its claim to its end: the server records this, not the
    // time the result reached it (which a server outage would stretch).
    let began = Instant::now();
    async move {
        logs.open(step.attempt_id, step.job_id, &step.step, step.log_cap);
        tracing::debug!("running step");
        let secrets = [ctx.config.join_token.as_str()];
        let mut host_env = ctx.host.env();
        host_env.push((
            crate::hostconfig::CONFIG_DIR_ENV.to_string(),
            crate::hostconfig::managed_dir(&ctx.config.workspace).display().to_string(),
        ));
        let project_dir = step
            .env
            .get(rota_domain::hostconfig::PROJECT_ENV)
            .map(|p| ctx.host.project_dir(p).ok_or_else(|| p.clone()));
        let host_secrets = ctx.host.secret_values();
        let setup = Setup {
            dirs: &ctx.dirs,
            spawner: &ctx.spawner,
            base_env: &ctx.base_env,
            secrets: &secrets,
            host_env: &host_env,
            host_secrets: &host_secrets,
            project_dir,
            kill_grace: ctx.config.kill_grace,
        };
        let hooks = CtxHooks { ctx: &ctx, step: &step };
        let ended = run_attempt(&step, &setup, &logs, stop_rx, &hooks).await;
        let run_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.attempts.finished(step.attempt_id);
        let outcome = ended.as_ref().map(|e| &e.outcome);
        // The slot goes with the result if its completion may claim a step for it; it is
        // freed at once when no claim would fill it (a lowered concurrency, a spent budget).
        let handed = match slot {
            Some(permit) if outcome.is_some() && ctx.claims_with_results() => {
                ctx.fleet.hand_over(step.attempt_id, outcome);
                let handed = HandedSlot::new(ctx.clone(), permit);
                (ctx.fleet.refillable(1) > 0).then_some(handed)
            }
            slot => {
                drop(slot);
                ctx.fleet.finished(step.attempt_id, outcome);
                None
            }
        };
        let Some(Ended { outcome, outputs }) = ended else {
            logs.discard(step.attempt_id);
            ctx.attempts.remove(step.attempt_id);
            tracing::debug!("step stopped: session superseded, nothing reported");
            return;
        };
        let fin = logs.finish(step.attempt_id).await;
        if fin.dropped > 0 {
            tracing::info!(
                dropped_bytes = fin.dropped,
                "output exceeded the log cap while unsent: oldest bytes dropped (counted in the cut notice)"
            );
        }
        tracing::debug!(outcome = %outcome.reason(), "step ended");
        ctx.reporter.push(
            handed,
            CompleteItem {
                job_id: step.job_id,
                step: step.step.clone(),
                attempt_id: step.attempt_id,
                outcome,
                logs: if fin.rejected { Vec::new() } else { fin.chunks },
                dropped_bytes: fin.dropped,
                run_ms: Some(run_ms),
                outputs,
            },
        );
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
