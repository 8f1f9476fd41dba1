//! The supervisor (`rota worker supervise --key K`), re-executed by `start` in a session of
//! its own: holds the instance lock for its whole life, is a child subreaper, runs the
//! worker and forwards its readiness, restarts crashes with backoff and jitter until too
//! many unstable exits make it `failed`. Exit 0 and 78 are never restarted; 75 at once.
//! In `failed` it keeps the lock only if its worker ever registered: a failed start leaves
//! no process behind, only the `failed` record.

use super::files::{self, Loaded};
use super::locks;
use super::logtail;
use super::paths::{Dirs, Instance, InstancePaths};
use super::procs::{self, ProcId};
use super::readiness::{self, NotReady, ReadyLine};
use super::reaper;
use super::state::{self, ExitKind, LastExit, Phase};
use crate::error::{Error, IoContext, Result};
use crate::saved::Saved;
use chrono::Utc;
use rota_worker::backoff::Backoff;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;
use tokio::signal::unix::{Signal as Sig, SignalKind, signal};
use tokio::time::Instant;

/// The worker's exit code for "stopped on request".
pub const EXIT_SHUTDOWN: i32 = 0;
/// The worker's exit code for "replace me" (recycling): restarted at once, not counted.
pub const EXIT_RECYCLE: i32 = 75;
/// The worker's exit code for bad configuration: never restarted.
pub const EXIT_CONFIG: i32 = 78;
/// Names the supervisor's pid for its worker, which then stops when the supervisor dies.
pub const SUPERVISOR_PID_ENV: &str = "ROTA_SUPERVISOR_PID";
/// Set (to `1`) for the first worker of `worker start --replace` only: it takes its name
/// over like `worker run --replace`. Never inherited by later workers.
pub const REPLACE_ONCE_ENV: &str = "ROTA_WORKER_REPLACE_ONCE";

/// Set by the supervisor for its worker: the path of the join token file to read (the
/// token itself never goes through a child's environment or argv).
pub const JOIN_TOKEN_FILE_ENV: &str = "ROTA_JOIN_TOKEN_FILE";
/// Restart delays never exceed this.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Extra time a worker gets after its drain timeout when the supervisor is TERMed.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// For a supervised process (worker or server): asks the kernel for SIGTERM when the
/// supervisor dies (`PR_SET_PDEATHSIG`, which the child sets on itself: no `pre_exec`).
/// Returns false when the supervisor is already gone (the caller should stop now).
pub fn follow_supervisor() -> bool {
    let Some(sup) = std::env::var(SUPERVISOR_PID_ENV).ok().and_then(|s| s.parse::<i32>().ok()) else {
        return true;
    };
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)) {
        tracing::warn!("cannot ask to be stopped with the supervisor: {e}");
    }
    let alive = rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) == Some(sup);
    if !alive {
        tracing::warn!(supervisor = sup, "the supervisor is already gone: stopping");
    }
    alive
}

/// What `rota worker supervise` was asked to supervise.
#[derive(Clone, Debug)]
pub struct SuperviseArgs {
    /// The instance's key (its settings file name).
    pub key: String,
    /// Give up (state failed) if the first run has not registered within this long.
    pub ready_timeout: Option<Duration>,
    /// The first worker it runs takes its name over (`worker start --replace`).
    pub replace: bool,
    /// The link to the server (a background worker's supervisor; not the server's own).
    pub link: Option<link::LinkConfig>,
}

/// Runs the supervisor; called before any runtime exists, with tracing set up by the
/// caller (to stderr, which `start` pointed at the log).
pub fn run(args: &SuperviseArgs) -> Result<ExitCode> {
    // A session of its own: no controlling terminal, so closing the terminal `start` ran
    // in sends it no SIGHUP. Fails only if already a group leader, which it is not.
    if let Err(e) = rustix::process::setsid() {
        tracing::warn!("setsid failed: {e}");
    }
    // It reads the join token file and holds the control secret: a step of the same user
    // must not read its memory or environment.
    rota_worker::dumpable::forbid_dumps();
    let notify = readiness::take_from_stdout();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .doing(|| "cannot start the supervisor's runtime".into())?;
    runtime.block_on(supervise(args, notify))
}

async fn supervise(args: &SuperviseArgs, mut notify: Option<File>) -> Result<ExitCode> {
    let mut fail_early = |line: ReadyLine| {
        if let Some(n) = notify.take() {
            readiness::send(n, &line);
        }
    };
    let Some(instance) = Instance::from_key(&args.key) else {
        fail_early(ReadyLine::failed(NotReady::Spawn, format!("unknown worker key '{}'", args.key), None));
        return Ok(ExitCode::from(2));
    };
    let dirs = Dirs::from_env()?;
    dirs.ensure()?;
    let paths = dirs.instance(&instance);
    let mut notes = Vec::new();
    let meta = match crate::saved::load(&paths, &mut notes) {
        Ok(Some(m)) => m,
        _ => {
            let msg = format!("no usable saved settings in {}", paths.meta.display());
            fail_early(ReadyLine::failed(NotReady::Spawn, msg, None));
            return Ok(ExitCode::from(1));
        }
    };
    let Some(_instance_lock) = locks::try_lock_patiently(&paths.instance_lock, Duration::from_secs(1))?
    else {
        let msg = format!("another supervisor holds {}", paths.instance_lock.display());
        fail_early(ReadyLine::failed(NotReady::Locked, msg, None));
        return Ok(ExitCode::from(1));
    };
    let me = ProcId::current().ok_or_else(|| Error::State("cannot read this process in /proc".into()))?;
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!("cannot become a child subreaper ({e}): orphaned step processes may escape");
    }
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    files::write_atomic(&paths.secret, hex::encode(secret).as_bytes(), 0o600)
        .doing(|| format!("cannot write {}", paths.secret.display()))?;
    // The pid file first: once the state names this supervisor it counts as alive, and
    // whoever sees it alive may look for the pid file.
    if let Err(e) = files::write_pidfile(&meta.pidfile, me.pid.unsigned_abs()) {
        tracing::warn!("cannot write the pid file {}: {e}", meta.pidfile.display());
    }
    let instance_id = uuid::Uuid::now_v7().to_string();
    state::update(&paths, |s| {
        *s = state::RuntimeState {
            instance_id: Some(instance_id.clone()),
            supervisor: Some(me),
            boot_id: procs::boot_id(),
            phase: Phase::Starting,
            started_at: Some(Utc::now()),
            ..state::RuntimeState::default()
        };
    })?;
    tracing::info!(key = %paths.key, pid = me.pid, "supervisor started");
    let exe = std::env::current_exe().doing(|| "cannot find this program's path".into())?;
    let shared = link::Shared::default();
    let (heal_tx, heals) = tokio::sync::mpsc::channel(1);
    let server = meta.url();
    let link_task = match (&args.link, meta.is_server()) {
        (Some(cfg), false) if !server.is_empty() => {
            let namespace =
                meta.worker.namespace.clone().unwrap_or_else(rota_domain::namespace::default_owned);
            // The token `start` saved for this worker, else the local server's join.token.
            let cfg = link::LinkConfig {
                token_file: meta.join_token_file.clone().unwrap_or_else(|| cfg.token_file.clone()),
                ca_cert: meta.ca_cert.clone(),
                ..cfg.clone()
            };
            let task = tokio::spawn(link::run(
                cfg.clone(),
                server.clone(),
                paths.clone(),
                namespace.clone(),
                shared.clone(),
                heal_tx,
            ));
            Some((task, cfg, server, namespace))
        }
        _ => None,
    };
    let mut sup = Supervisor {
        paths,
        meta,
        exe,
        me,
        instance_id,
        notify,
        signals: Signals::install()?,
        ready_deadline: args.ready_timeout.map(|d| Instant::now() + d),
        registered: false,
        ready_timeout: args.ready_timeout,
        replace_once: args.replace,
        shared,
        heals,
        heal_requested: None,
    };
    // The log it and its worker write to grows with every run: bounded by size here.
    let rotation = tokio::spawn(super::logrotate::watch(
        sup.meta.log_path.clone(),
        super::logrotate::Rotation::from_env(),
    ));
    loop {
        sup.run().await;
        // A heal from the server ended `failed`: the one primitive, here on the host.
        match sup.heal_requested.take() {
            Some(id) => sup.begin_heal(id),
            None => break,
        }
    }
    rotation.abort();
    if let Some((task, cfg, server, namespace)) = link_task {
        task.abort();
        link::last_report(&cfg, &server, &sup.paths, &namespace, &sup.shared).await;
    }
    files::remove_pidfile_of(&sup.meta.pidfile, me.pid);
    tracing::info!("supervisor exiting");
    Ok(ExitCode::SUCCESS)
}

struct Signals {
    term: Sig,
    int: Sig,
    hup: Sig,
    chld: Sig,
}

impl Signals {
    fn install() -> Result<Self> {
        let s = |k| signal(k).doing(|| "cannot install a signal handler".into());
        Ok(Self {
            term: s(SignalKind::terminate())?,
            int: s(SignalKind::interrupt())?,
            hup: s(SignalKind::hangup())?,
            chld: s(SignalKind::child())?,
        })
    }
}

/// What to do after a worker exited.
enum Next {
    /// Start it again after this delay.
    Restart(Duration),
    /// Give up: `failed` until a stop signal.
    Failed,
    /// Supervision is over: exit.
    Exit,
}

/// What happened while a worker ran.
enum Event {
    Ready(ReadyLine),
    Exited(ExitStatus),
    Deadline,
    Stop,
}

struct Supervisor {
    paths: InstancePaths,
    meta: Saved,
    exe: PathBuf,
    me: ProcId,
    instance_id: String,
    /// `start`'s readiness pipe, until it has been answered.
    notify: Option<File>,
    signals: Signals,
    /// Only the first run has to register by a deadline.
    ready_deadline: Option<Instant>,
    /// A worker of this supervisor registered at least once (decides what `failed` keeps).
    registered: bool,
    ready_timeout: Option<Duration>,
    /// Only the first run takes its name over (`start --replace`).
    replace_once: bool,
    /// What the link to the server reports (heal progress) and when to report at once.
    shared: link::Shared,
    /// Heals the server sent (through the link).
    heals: tokio::sync::mpsc::Receiver<uuid::Uuid>,
    /// A heal ended `failed`: start again with the saved settings.
    heal_requested: Option<uuid::Uuid>,
}

mod child;
pub mod link;

impl Supervisor {
    async fn run(&mut self) {
        let mut consecutive_unstable = 0u32;
        loop {
            let log_from = logtail::len(&self.meta.log_path);
            let replace = std::mem::take(&mut self.replace_once);
            let (mut child, ready_pipe) = match self.spawn_worker(replace) {
                Ok(x) => x,
                Err(e) => {
                    let why = format!(
                        "cannot start {} ({}): {e}",
                        self.what(),
                        self.meta.invocation(&self.exe).program.display()
                    );
                    self.fail(NotReady::Spawn, why, None);
                    return self.after_failed().await;
                }
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
            let worker = ProcId::of(pid);
            self.update(|s| {
                s.phase = Phase::Starting;
                s.worker = worker;
                s.worker_started_at = Some(Utc::now());
                s.port = None;
            });
            let started = Instant::now();
            let mut worker_error: Option<String> = None;
            let mut event = self.until_ready(&mut child, ready_pipe, &mut worker_error).await;
            if let Event::Ready(line) = &event {
                self.on_ready(pid, line);
                event = self.until_exit(&mut child).await;
            }
            let log_path = self.meta.log_path.clone();
            let error = || worker_error.clone().or_else(|| logtail::last_problem(&log_path, log_from));
            let status = match event {
                Event::Ready(_) => continue,
                Event::Stop => return self.stop_worker(&mut child, pid, started).await,
                Event::Deadline => {
                    let last = error();
                    self.end_worker(&mut child, pid, Duration::from_secs(3)).await;
                    let secs = self.ready_timeout.unwrap_or_default();
                    let mut why = if self.meta.is_server() {
                        format!("the server did not listen within {}", humantime::format_duration(secs))
                    } else {
                        format!(
                            "did not register with {} within {}",
                            self.meta.url(),
                            humantime::format_duration(secs)
                        )
                    };
                    if let Some(e) = last {
                        why.push_str(&format!("; last problem logged: {e}"));
                    }
                    self.record_exit(None, ExitKind::NotReady, started);
                    self.fail(NotReady::Timeout, why, None);
                    return self.after_failed().await;
                }
                Event::Exited(status) => status,
            };
            reaper::kill_leftovers(self.me.pid);
            match self.after_exit(status, started, error(), &mut consecutive_unstable) {
                Next::Restart(delay) => {
                    if self.sleep_or_stop(delay).await {
                        return self.mark_stopped(false);
                    }
                }
                Next::Failed => return self.after_failed().await,
                Next::Exit => return,
            }
        }
    }

    /// What a worker's exit means: operator shutdown and 78 end supervision, 75 restarts
    /// at once, a crash restarts after a backoff unless it is crashing in a loop.
    fn after_exit(
        &mut self,
        status: ExitStatus,
        started: Instant,
        error: Option<String>,
        unstable_run: &mut u32,
    ) -> Next {
        let ever_ready = self.ready_deadline.is_none();
        let code = status.code();
        let described = format!("{} {}", self.what(), describe(status));
        let error_text = || error.clone().unwrap_or_else(|| "see the log".into());
        if self.stopped_by_user() {
            self.record_exit(Some(status), ExitKind::Shutdown, started);
            self.mark_stopped(false);
            return Next::Exit;
        }
        match code {
            Some(EXIT_SHUTDOWN) => {
                tracing::info!("{} shut down on request; not restarting", self.what());
                self.record_exit(Some(status), ExitKind::Shutdown, started);
                self.mark_stopped(true);
                return Next::Exit;
            }
            Some(EXIT_CONFIG) => {
                let why = format!("{} ({described}: bad configuration, never restarted)", error_text());
                self.record_exit(Some(status), ExitKind::Config, started);
                self.fail(NotReady::Refused, why, code);
                return Next::Failed;
            }
            Some(EXIT_RECYCLE) if ever_ready => {
                tracing::info!("the worker exited to be recycled; starting a new one");
                self.record_exit(Some(status), ExitKind::Recycle, started);
                self.update(|s| s.restarts += 1);
                return Next::Restart(Duration::ZERO);
            }
            _ if !ever_ready && self.notify.is_some() => {
                let before = if self.meta.is_server() { "it listened" } else { "it registered" };
                let why = format!("{described} before {before}: {}", error_text());
                self.record_exit(Some(status), ExitKind::Crash, started);
                self.fail(NotReady::Exited, why, code);
                return Next::Failed;
            }
            _ => {}
        }
        let sv = self.meta.supervision;
        let unstable = started.elapsed() < Duration::from_millis(sv.min_uptime_ms);
        *unstable_run = if unstable { *unstable_run + 1 } else { 0 };
        let window = chrono::Duration::milliseconds(i64::try_from(sv.restart_window_ms).unwrap_or(i64::MAX));
        let now = Utc::now();
        let last = error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        self.record_exit(Some(status), ExitKind::Crash, started);
        let st = self.update(|s| {
            s.unstable_exits.retain(|t| now - *t < window);
            if unstable {
                s.unstable_exits.push(now);
            }
            s.last_error = Some(format!("{described}{last}"));
        });
        let unstable_count = st.map_or(0, |s| s.unstable_exits.len());
        if unstable_count >= usize::try_from(sv.max_restarts).unwrap_or(usize::MAX) {
            let why = format!(
                "crash loop: {unstable_count} unstable exits (runs under {}) within {}; last: {described}{last}",
                humantime::format_duration(Duration::from_millis(sv.min_uptime_ms)),
                humantime::format_duration(Duration::from_millis(sv.restart_window_ms)),
            );
            self.fail(NotReady::Exited, why, code);
            return Next::Failed;
        }
        let delay = backoff(Duration::from_millis(sv.restart_delay_ms), *unstable_run);
        tracing::warn!(delay_ms = delay.as_millis() as u64, "{described}; restarting after a delay");
        self.update(|s| {
            s.phase = Phase::Backoff;
            s.restarts += 1;
        });
        Next::Restart(delay)
    }

    /// The heal primitive, as `rota worker heal` does it on the host: the failed state is
    /// reset and the worker starts with the saved settings, read again (never edited).
    fn begin_heal(&mut self, id: uuid::Uuid) {
        tracing::info!(heal = %id, "healing: resetting the failed state, starting with the saved settings");
        let mut notes = Vec::new();
        match crate::saved::load(&self.paths, &mut notes) {
            Ok(Some(m)) => self.meta = m,
            _ => tracing::warn!(
                "the saved settings cannot be read again: healing with the ones loaded at start"
            ),
        }
        self.update(|s| {
            s.phase = Phase::Starting;
            s.failed_reason = None;
            s.unstable_exits.clear();
            s.stopped_by_user = false;
        });
    }

    fn on_ready(&mut self, pid: i32, line: &ReadyLine) {
        tracing::info!(pid, port = line.port, "{} is ready", self.what());
        if let Some(id) = self.shared.healing() {
            tracing::info!(heal = %id, pid, "healed");
            self.shared.set_heal(
                id,
                rota_api_types::supervisors::HealPhase::Healed,
                Some(pid.unsigned_abs()),
                None,
            );
        }
        self.ready_deadline = None;
        self.registered = true;
        let (line, supervisor) = (line.clone(), self.me.pid.unsigned_abs());
        self.update(|s| {
            s.phase = Phase::Running;
            s.port = line.port;
            s.worker_name = line.name.clone();
            s.session_id = line.session_id.clone();
            s.registered_at = Some(Utc::now());
            s.failed_reason = None;
        });
        if let Some(n) = self.notify.take() {
            readiness::send(
                n,
                &ReadyLine { supervisor_pid: Some(supervisor), pid: Some(pid.unsigned_abs()), ..line },
            );
        }
        // Under `rota worker enable`'s unit (Type=notify): ready once the worker registered.
        super::systemd::notify(&format!("READY=1\nSTATUS={} is ready (pid {pid})", self.what()));
    }

    /// "the worker", or "the server" for the background server.
    fn what(&self) -> &'static str {
        if self.meta.is_server() { "the server" } else { "the worker" }
    }

    fn stopped_by_user(&self) -> bool {
        matches!(state::load(&self.paths), Ok(Loaded::Found(s)) if s.stopped_by_user)
    }

    fn record_exit(&mut self, status: Option<ExitStatus>, kind: ExitKind, started: Instant) {
        let uptime_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.update(|s| {
            s.worker = None;
            s.port = None;
            s.last_exit = Some(LastExit {
                code: status.and_then(|s| s.code()),
                signal: status.and_then(|s| s.signal()),
                at: Utc::now(),
                kind,
                uptime_ms,
            });
        });
    }

    fn fail(&mut self, code: NotReady, why: String, exit_code: Option<i32>) {
        tracing::error!("giving up, {} is now failed: {why}", self.what());
        if let Some(id) = self.shared.healing() {
            self.shared.set_heal(id, rota_api_types::supervisors::HealPhase::Failed, None, Some(why.clone()));
        }
        super::systemd::notify(&format!("STATUS=failed: {why}"));
        let reason = why.clone();
        self.update(|s| {
            s.phase = Phase::Failed;
            s.worker = None;
            s.port = None;
            s.failed_reason = Some(reason.clone());
            s.last_error = Some(reason);
        });
        if let Some(n) = self.notify.take() {
            readiness::send(n, &ReadyLine::failed(code, why, exit_code));
        }
    }

    fn mark_stopped(&mut self, by_operator: bool) {
        self.update(|s| {
            s.phase = Phase::Stopped;
            s.worker = None;
            s.port = None;
            s.stopped_at = Some(Utc::now());
            if by_operator {
                s.stopped_by_user = true;
            }
        });
    }

    /// After `failed`: a worker that registered at least once keeps this supervisor (see
    /// [`Self::idle_failed`]). One that never did was a failed start: the supervisor exits
    /// and leaves no rota process behind; the `failed` record (reason, last exit) stays in
    /// the state file for `status` and `heal`, and the free instance lock lets the next
    /// `start` begin afresh.
    async fn after_failed(&mut self) {
        if self.registered {
            return self.idle_failed().await;
        }
        reaper::kill_leftovers(self.me.pid);
        tracing::info!(
            "{} never became ready: the supervisor exits; the state file keeps `failed`",
            self.what()
        );
    }

    /// `failed`: keep the instance lock (no second supervisor starts by accident) until a
    /// stop signal; `start` and `heal` replace this supervisor.
    async fn idle_failed(&mut self) {
        loop {
            tokio::select! {
                _ = self.signals.term.recv() => return,
                _ = self.signals.int.recv() => return,
                _ = self.signals.hup.recv() => {}
                _ = self.signals.chld.recv() => reaper::kill_leftovers(self.me.pid),
                Some(id) = self.heals.recv() => {
                    self.heal_requested = Some(id);
                    return;
                }
            }
        }
    }

    /// Sleeps `delay`; true if a stop signal came first.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return false,
                _ = self.signals.term.recv() => return true,
                _ = self.signals.int.recv() => return true,
                _ = self.signals.hup.recv() => {}
                _ = self.signals.chld.recv() => reaper::kill_leftovers(self.me.pid),
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut state::RuntimeState)) -> Option<state::RuntimeState> {
        let written = match state::update(&self.paths, change) {
            Ok((s, _)) => Some(s),
            Err(e) => {
                tracing::error!("cannot write the worker's state: {e:#}");
                None
            }
        };
        // The link reports the new state at once.
        self.shared.changed.notify_one();
        written
    }
}

/// `min(base·2ⁿ⁻¹, 60 s)` ± 20% jitter, for the n-th consecutive unstable exit.
fn backoff(base: Duration, n: u32) -> Duration {
    Backoff::new(base, MAX_DELAY).with_jitter(0.8..=1.2).delay_after(n)
}

/// `exited with code 1`, `was killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(1);
        for _ in 0..50 {
            let d1 = backoff(base, 1);
            assert!(d1 >= Duration::from_millis(800) && d1 <= Duration::from_millis(1200), "{d1:?}");
            let d3 = backoff(base, 3);
            assert!(d3 >= Duration::from_millis(3200) && d3 <= Duration::from_millis(4800), "{d3:?}");
            assert!(backoff(base, 30) <= MAX_DELAY.mul_f64(1.2));
        }
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exited with code 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by signal 9");
    }
}
