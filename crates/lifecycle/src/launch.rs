//! Starting a background worker, the one path behind `start`, `restart`, `heal` and `multi
//! start`: under the lifecycle lock, check (reuse, reset a failed one, clean stale files),
//! save the settings, re-execute this binary as the supervisor, wait on the readiness pipe.
//! A failure names what happened, the log, its last lines and the foreground command.

use super::envfile;
use super::files;
use super::halt;
use super::identity::{self, Liveness, describe_stale_pid};
use super::locks;
use super::logtail;
use super::paths::{Dirs, InstancePaths};
use super::readiness::{self, NotReady, READY_FD_ENV, ReadyLine, Waited};
use super::state::{self, Phase};
use crate::error::{Error, IoContext, Result};
use crate::saved::{Overrides, Saved, parse_bind};
use rota_worker::ShutdownMode;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Time the supervisor needs beyond the wait timeout to stop a worker that did not
/// register and report it.
const REPORT_SLACK: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    /// Settings from the command line (empty: the saved ones).
    pub overrides: Overrides,
    /// The server for a worker that has no saved settings yet.
    pub default_server: String,
    /// How long to wait for the registration; `None` = `--no-wait`.
    pub wait: Option<Duration>,
    /// The worker started takes its name over from a live worker of another instance
    /// (`--replace`): once, never saved with the settings.
    pub replace: bool,
}

/// How `start` ended, when it worked.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A live worker with the same settings was already running.
    Reused,
    /// A new supervisor (and worker) was started.
    Started,
}

/// A worker that runs (or, with `--no-wait`, whose supervisor runs).
#[derive(Clone, Debug)]
pub struct Launched {
    /// Reused or started.
    pub outcome: Outcome,
    /// The worker's pid (`None` with `--no-wait`).
    pub pid: Option<i32>,
    /// The supervisor's pid.
    pub supervisor_pid: i32,
    /// The registered name.
    pub name: Option<String>,
    /// The control port.
    pub port: Option<u16>,
    /// The settings it runs with.
    pub meta: Saved,
    /// Things the user should know (stale files cleaned, a failed worker reset, ...).
    pub notes: Vec<String>,
    /// How long it took.
    pub took: Duration,
}

/// Starts (or reuses) the worker of `paths`, holding its lifecycle lock throughout.
pub fn start(dirs: &Dirs, paths: &InstancePaths, req: &StartRequest) -> Result<Launched> {
    dirs.ensure()?;
    let _lifecycle = locks::lock(&paths.lifecycle_lock)?;
    start_locked(paths, req)
}

/// [`start`] for a caller that holds the lifecycle lock.
pub fn start_locked(paths: &InstancePaths, req: &StartRequest) -> Result<Launched> {
    let began = Instant::now();
    let mut notes = Vec::new();
    let saved = crate::saved::load(paths, &mut notes)?;
    let mut meta = saved.clone().unwrap_or_else(|| Saved::fresh(paths, req.default_server.clone()));
    let cwd = std::env::current_dir().doing(|| "cannot read the current directory".into())?;
    meta.apply(&req.overrides, &cwd)?;
    if let Some(token) = &req.overrides.join_token {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::usage("--join-token: empty"));
        }
        if std::fs::read_to_string(&paths.token).ok().as_deref().map(str::trim) != Some(token) {
            files::write_atomic(&paths.token, format!("{token}\n").as_bytes(), 0o600)
                .doing(|| format!("cannot write {}", paths.token.display()))?;
        }
        meta.join_token_file = Some(paths.token.clone());
    }
    check(&meta)?;

    let probe = identity::probe_settled(paths, Duration::from_secs(3))?;
    if let Some(q) = &probe.quarantined {
        notes.push(format!("the state file could not be trusted ({}); moved to {}", q.1, q.0.display()));
    }
    match &probe.liveness {
        Liveness::Unverified => {
            return Err(Error::State(format!(
                "{} holds the lock {}, but it is not the supervisor recorded in {}; nothing was started \
             or signalled (`rota worker diagnose` lists rota processes)",
                paths.instance,
                paths.instance_lock.display(),
                paths.state.display()
            )));
        }
        Liveness::Alive(alive) => {
            let st = probe.state.clone().unwrap_or_default();
            let alive = alive.clone();
            match st.phase {
                Phase::Running if alive.worker.is_some() && saved.as_ref() == Some(&meta) => {
                    return Ok(Launched {
                        outcome: Outcome::Reused,
                        pid: alive.worker.map(|w| w.pid),
                        supervisor_pid: alive.supervisor.pid,
                        name: st.worker_name,
                        port: st.port,
                        meta,
                        notes,
                        took: began.elapsed(),
                    });
                }
                Phase::Running if alive.worker.is_some() => {
                    notes.push(format!(
                        "its settings changed: the running {} was stopped and replaced",
                        meta.what()
                    ));
                    let old = saved.clone().unwrap_or_else(|| meta.clone());
                    halt::stop_locked(paths, &old, ShutdownMode::Warm, None)?;
                }
                Phase::Starting | Phase::Backoff | Phase::Running => {
                    if let Some(l) = wait_settled(paths, req.wait.unwrap_or(Duration::ZERO))?
                        && saved.as_ref() == Some(&meta)
                    {
                        return Ok(Launched {
                            outcome: Outcome::Reused,
                            meta,
                            notes,
                            took: began.elapsed(),
                            ..l
                        });
                    }
                    notes.push(format!("replaced a {} that was not running properly", meta.what()));
                    let old = saved.clone().unwrap_or_else(|| meta.clone());
                    halt::stop_locked(paths, &old, ShutdownMode::Soft, None)?;
                }
                Phase::Failed | Phase::Stopping | Phase::Stopped => {
                    if st.phase == Phase::Failed {
                        notes.push(format!(
                            "reset the failed worker ({})",
                            st.failed_reason.as_deref().unwrap_or("no reason recorded")
                        ));
                    }
                    halt::end_supervisor(paths, &alive)?;
                }
            }
        }
        Liveness::Dead => {
            if let Some(st) = &probe.state
                && let Some(pid) = halt::stop_orphan(paths, saved.as_ref().unwrap_or(&meta), st)
            {
                notes.push(format!("stopped worker pid {pid}, left running by a supervisor that died"));
            }
        }
    }
    for pidfile in [Some(&meta.pidfile), saved.as_ref().map(|m| &m.pidfile)].into_iter().flatten() {
        if let Ok(Some(found)) = files::read_pidfile(pidfile) {
            let what = match found {
                Ok(pid) => describe_stale_pid(pid),
                Err(e) => e,
            };
            let _ = std::fs::remove_file(pidfile);
            notes.push(format!("removed the stale pid file {} ({what})", pidfile.display()));
        }
    }
    if saved.as_ref() != Some(&meta) {
        files::write_json(&paths.meta, &meta, 0o600)
            .doing(|| format!("cannot save the settings to {}", paths.meta.display()))?;
    }
    state::update(paths, |s| {
        s.stopped_by_user = false;
        s.phase = Phase::Starting;
        s.supervisor = None;
        s.worker = None;
    })?;
    let mut launched = spawn_supervisor(paths, &meta, req.wait, req.replace)?;
    launched.notes.splice(0..0, notes);
    launched.took = began.elapsed();
    Ok(launched)
}

/// Refuses settings that cannot work before anything is spawned.
fn check(meta: &Saved) -> Result<()> {
    parse_bind(&meta.bind)?;
    if !meta.is_server() && meta.worker.workspace.is_none() && meta.command.is_none() {
        // The default workspace is named for the worker: a name that cannot be one is
        // refused here (exit 2), not by a worker that would then fail in the background.
        crate::workspace::dir_name(&super::report::expected_name(meta))?;
    }
    if let Some(path) = &meta.env_file
        && let Err(bad) = envfile::load(path)
    {
        let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
        return Err(Error::usage(format!("env file {}: {}", path.display(), lines.join("; "))));
    }
    if meta.command.as_ref().is_some_and(|c| c.is_empty() || c[0].trim().is_empty()) {
        return Err(Error::usage("--command: empty"));
    }
    for (what, path) in [("log file", &meta.log_path), ("pid file", &meta.pidfile)] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .doing(|| format!("cannot create the {what}'s directory {}", dir.display()))?;
        }
        if path.is_dir() {
            return Err(Error::usage(format!("the {what} {} is a directory", path.display())));
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&meta.log_path)
        .doing(|| format!("cannot write the log file {}", meta.log_path.display()))?;
    Ok(())
}

/// A supervisor that is starting or restarting its worker: waits (up to `wait`) until
/// it runs (returns it) or gives up.
fn wait_settled(paths: &InstancePaths, wait: Duration) -> Result<Option<Launched>> {
    let deadline = Instant::now() + wait;
    loop {
        let p = identity::probe(paths)?;
        let st = p.state.clone().unwrap_or_default();
        match (&p.liveness, st.phase) {
            (Liveness::Alive(a), Phase::Running) if a.worker.is_some() => {
                return Ok(Some(Launched {
                    outcome: Outcome::Reused,
                    pid: a.worker.map(|w| w.pid),
                    supervisor_pid: a.supervisor.pid,
                    name: st.worker_name,
                    port: st.port,
                    meta: Saved::fresh(paths, String::new()),
                    notes: Vec::new(),
                    took: Duration::ZERO,
                }));
            }
            (Liveness::Alive(_), Phase::Starting | Phase::Backoff | Phase::Running)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => return Ok(None),
        }
    }
}

/// Re-executes this binary as the supervisor in a new session and waits for its word.
fn spawn_supervisor(
    paths: &InstancePaths,
    meta: &Saved,
    wait: Option<Duration>,
    replace: bool,
) -> Result<Launched> {
    let exe = std::env::current_exe().doing(|| "cannot find this program's path".into())?;
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&meta.log_path)
        .doing(|| format!("cannot open the log file {}", meta.log_path.display()))?;
    let log_from = logtail::len(&meta.log_path);
    let mut cmd = Command::new(&exe);
    // The join token was saved to its 0600 file above: it never travels in a child's
    // environment (the supervisor hands the worker the file's path).
    cmd.args(["worker", "supervise", "--key", &paths.key])
        .stdin(Stdio::null())
        .stderr(Stdio::from(log))
        .env_remove("ROTA_JOIN_TOKEN");
    if replace {
        cmd.arg("--replace");
    }
    let reader = match wait {
        Some(timeout) => {
            let (reader, writer) = std::io::pipe().doing(|| "cannot create the readiness pipe".into())?;
            cmd.arg("--ready-timeout").arg(format!("{}ms", timeout.as_millis())).stdout(Stdio::from(writer));
            cmd.env(READY_FD_ENV, "1");
            Some(reader)
        }
        None => {
            cmd.stdout(Stdio::null()).env_remove(READY_FD_ENV);
            None
        }
    };
    let mut child = cmd.spawn().doing(|| format!("cannot start {}", exe.display()))?;
    // Closes our copy of the pipe's write end: EOF then means the supervisor is gone.
    drop(cmd);
    let supervisor_pid = i32::try_from(child.id()).unwrap_or(0);
    let failure = |what: String| StartFailure { what, meta: meta.clone(), paths: paths.clone(), log_from };
    let Some(reader) = reader else {
        // --no-wait: only make sure the supervisor took over.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(a) = identity::probe(paths)?.alive().cloned() {
                return Ok(Launched {
                    outcome: Outcome::Started,
                    pid: None,
                    supervisor_pid: a.supervisor.pid,
                    name: None,
                    port: None,
                    meta: meta.clone(),
                    notes: Vec::new(),
                    took: Duration::ZERO,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failure(format!("the supervisor {}", super::supervisor::describe(status))).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return Err(failure("the supervisor did not take its lock within 5s".into()).into());
    };
    let timeout = wait.unwrap_or_default() + REPORT_SLACK;
    match readiness::wait_line(reader, timeout) {
        Waited::Line(line) if line.ok => Ok(Launched {
            outcome: Outcome::Started,
            pid: line.pid.and_then(|p| i32::try_from(p).ok()),
            supervisor_pid: line.supervisor_pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(supervisor_pid),
            name: line.name,
            port: line.port,
            meta: meta.clone(),
            notes: Vec::new(),
            took: Duration::ZERO,
        }),
        Waited::Line(line) => {
            Err(failure(not_ready_text(&line, wait.unwrap_or_default(), meta.is_server())).into())
        }
        Waited::Closed(how) => {
            let status = child.try_wait().ok().flatten().map(super::supervisor::describe);
            let what = format!(
                "the supervisor {} before the {} was ready (readiness pipe {how})",
                status.unwrap_or_else(|| "went away".into()),
                meta.what()
            );
            let reason = what.clone();
            let _ = state::update(paths, |s| {
                s.phase = Phase::Failed;
                s.failed_reason = Some(reason.clone());
                s.last_error = Some(reason);
            });
            Err(failure(what).into())
        }
        Waited::TimedOut => {
            // Our own unreaped child: its pid is still ours to signal.
            if let Some(pid) = rustix::process::Pid::from_raw(supervisor_pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let what =
                format!("the supervisor did not report within {}", humantime::format_duration(timeout));
            let reason = what.clone();
            let _ = state::update(paths, |s| {
                s.phase = Phase::Failed;
                s.failed_reason = Some(reason);
            });
            Err(failure(what).into())
        }
    }
}

/// Why a start failed, naming what was started: the background server is supervised like
/// a worker, but it listens rather than registers.
fn not_ready_text(line: &ReadyLine, wait: Duration, server: bool) -> String {
    let error = line.error.clone().unwrap_or_else(|| "no reason given".into());
    let (what, ready) = if server { ("server", "listened") } else { ("worker", "registered") };
    match line.code {
        Some(NotReady::Refused) => format!("refused at once: {error}"),
        Some(NotReady::Timeout) if server => format!(
            "the server did not listen within {} (--wait-timeout): {error}",
            humantime::format_duration(wait)
        ),
        Some(NotReady::Timeout) => format!(
            "the worker did not register within {} (--wait-timeout): {error}",
            humantime::format_duration(wait)
        ),
        Some(NotReady::Exited) => format!("the {what} stopped before it {ready}: {error}"),
        Some(NotReady::Locked) => format!("another supervisor is running: {error}"),
        Some(NotReady::Spawn) | None => format!("the {what} could not be started: {error}"),
    }
}

/// A start that failed, with everything needed to act on it.
#[derive(Debug)]
pub struct StartFailure {
    what: String,
    meta: Saved,
    paths: InstancePaths,
    log_from: u64,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} did not start: {}", self.paths.instance, self.what)?;
        writeln!(
            f,
            "  state: failed (no automatic restarts; `{}` shows it)",
            self.paths.instance.status_command()
        )?;
        writeln!(f, "  log: {}", self.meta.log_path.display())?;
        let lines = logtail::tail(&self.meta.log_path, self.log_from, 8);
        if !lines.is_empty() {
            writeln!(f, "  last log lines:")?;
            for l in lines {
                writeln!(f, "    {l}")?;
            }
        }
        write!(f, "  to reproduce in the foreground: {}", self.meta.foreground_command())
    }
}

impl std::error::Error for StartFailure {}

impl StartFailure {
    /// The one-line reason, for heal events.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The log of the worker (or server) that did not start.
    pub fn log_path(&self) -> &std::path::Path {
        &self.meta.log_path
    }

    /// The last log lines written during this start.
    pub fn last_lines(&self) -> Vec<String> {
        logtail::tail(&self.meta.log_path, self.log_from, 8)
    }

    /// The command that reproduces the start in the foreground.
    pub fn foreground_command(&self) -> String {
        self.meta.foreground_command()
    }
}

/// An error with no worker to name, e.g. before any settings exist.
pub fn nothing_saved(paths: &InstancePaths) -> Error {
    Error::State(format!(
        "{} has never been started here (no {}); run `rota worker start` first",
        paths.instance,
        paths.meta.display()
    ))
}
