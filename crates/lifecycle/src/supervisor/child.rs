//! The supervisor's worker process: spawning it (its command line, a scrubbed environment,
//! the readiness pipe as its stdout, its own process group), waiting for its readiness,
//! its exit or a stop signal, and ending it (TERM, bounded wait, KILL). Its orphans are
//! `reaper`'s job.

use super::{Event, REPLACE_ONCE_ENV, STOP_SLACK, SUPERVISOR_PID_ENV, Supervisor};
use crate::envfile;
use crate::readiness::{self, NotReady, READY_FD_ENV, ReadyLine};
use crate::reaper;
use crate::state::{ExitKind, Phase};
use rustix::process::Signal;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::time::Instant;

/// Variables of the supervisor's environment a worker must not inherit: they would
/// override its saved settings, or they are credentials it must not hold.
const SCRUBBED: &[&str] = &[
    "ROTA_JOIN_TOKEN",
    super::JOIN_TOKEN_FILE_ENV,
    "ROTA_TOKEN",
    "ROTA_SERVER",
    "ROTA_PROFILE",
    "ROTA_WORKER_NODE",
    "ROTA_WORKER_PIDFILE",
    "ROTA_WORKER_LOGFILE",
    "ROTA_WORKER_QUEUES",
    "ROTA_WORKER_COMMAND",
    "ROTA_WORKER_BIND",
    READY_FD_ENV,
    REPLACE_ONCE_ENV,
];

impl Supervisor {
    /// Spawns the worker; with `replace` it takes its name over (the first run of
    /// `start --replace` only).
    pub(crate) fn spawn_worker(&self, replace: bool) -> std::io::Result<(Child, pipe::Receiver)> {
        let inv = self.meta.invocation(&self.exe);
        let (reader, writer) = std::io::pipe()?;
        let mut cmd = tokio::process::Command::new(&inv.program);
        cmd.args(&inv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        for k in SCRUBBED {
            cmd.env_remove(k);
        }
        if let Some(path) = &self.meta.env_file {
            match envfile::load(path) {
                Ok(vars) => {
                    cmd.envs(vars);
                }
                Err(bad) => {
                    let bad: Vec<String> = bad.iter().map(ToString::to_string).collect();
                    return Err(std::io::Error::other(format!(
                        "env file {}: {}",
                        path.display(),
                        bad.join("; ")
                    )));
                }
            }
        }
        cmd.envs(inv.env.iter().map(|(k, v)| (k, v)));
        // The token by its file's path, never its value: a child's environment is readable
        // by whatever that child runs, and an env file must not override the saved token.
        if let Some(f) = &self.meta.join_token_file {
            cmd.env_remove("ROTA_JOIN_TOKEN").env(super::JOIN_TOKEN_FILE_ENV, f);
        }
        cmd.env(READY_FD_ENV, "1")
            .env(crate::control::SECRET_FILE_ENV, &self.paths.secret)
            .env("ROTA_INSTANCE_ID", &self.instance_id)
            .env("ROTA_INSTANCE_KEY", &self.paths.key)
            .env(SUPERVISOR_PID_ENV, self.me.pid.to_string())
            .env("ROTA_WORKER_BIND", &self.meta.bind);
        if replace {
            cmd.env(REPLACE_ONCE_ENV, "1");
        }
        let child = cmd.spawn()?;
        // Our copy of the write end must be closed, or EOF would never come.
        drop(cmd);
        let receiver = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        Ok((child, receiver))
    }

    /// Waits for the worker's readiness line, its exit, the deadline or a stop signal.
    pub(crate) async fn until_ready(
        &mut self,
        child: &mut Child,
        ready_pipe: pipe::Receiver,
        worker_error: &mut Option<String>,
    ) -> Event {
        let read = read_line(ready_pipe);
        tokio::pin!(read);
        let mut read_done = false;
        let deadline = self.ready_deadline;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        loop {
            tokio::select! {
                line = &mut read, if !read_done => {
                    read_done = true;
                    match line {
                        Some(l) if l.ok => return Event::Ready(l),
                        Some(l) => *worker_error = l.error,
                        None => {}
                    }
                }
                status = child.wait() => return match status {
                    Ok(s) => Event::Exited(s),
                    Err(e) => {
                        tracing::error!("cannot wait for {}: {e}", self.what());
                        Event::Exited(ExitStatus::from_raw(1 << 8))
                    }
                },
                () = sleep_until_opt(deadline) => return Event::Deadline,
                _ = self.signals.term.recv() => return Event::Stop,
                _ = self.signals.int.recv() => return Event::Stop,
                _ = self.signals.hup.recv() => {}
                _ = self.signals.chld.recv() => reaper::reap_adopted(self.me.pid, pid),
            }
        }
    }

    pub(crate) async fn until_exit(&mut self, child: &mut Child) -> Event {
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        loop {
            tokio::select! {
                status = child.wait() => return match status {
                    Ok(s) => Event::Exited(s),
                    Err(_) => Event::Exited(ExitStatus::from_raw(1 << 8)),
                },
                _ = self.signals.term.recv() => return Event::Stop,
                _ = self.signals.int.recv() => return Event::Stop,
                _ = self.signals.hup.recv() => {}
                _ = self.signals.chld.recv() => reaper::reap_adopted(self.me.pid, pid),
            }
        }
    }

    /// A stop signal to the supervisor: TERM the worker (it drains), KILL it after its
    /// drain timeout plus slack or on a second signal, clean up, exit.
    pub(crate) async fn stop_worker(&mut self, child: &mut Child, pid: i32, started: Instant) {
        tracing::info!("stop requested: stopping {}", self.what());
        self.update(|s| s.phase = Phase::Stopping);
        reaper::signal_child(pid, Signal::TERM);
        let bound = self.meta.drain_timeout() + STOP_SLACK;
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            () = tokio::time::sleep(bound) => None,
            _ = self.signals.term.recv() => None,
            _ = self.signals.int.recv() => None,
        };
        let status = match status {
            Some(s) => Some(s),
            None => {
                reaper::signal_child(pid, Signal::KILL);
                child.wait().await.ok()
            }
        };
        reaper::kill_leftovers(self.me.pid);
        self.record_exit(status, ExitKind::Shutdown, started);
        if let Some(n) = self.notify.take() {
            let why = if self.meta.is_server() {
                "stopped before it listened"
            } else {
                "stopped before it registered"
            };
            readiness::send(n, &ReadyLine::failed(NotReady::Exited, why, None));
        }
        self.mark_stopped(false);
    }

    /// TERM, up to `grace`, then KILL; then the leftovers.
    pub(crate) async fn end_worker(&mut self, child: &mut Child, pid: i32, grace: Duration) {
        reaper::signal_child(pid, Signal::TERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            reaper::signal_child(pid, Signal::KILL);
            let _ = child.wait().await;
        }
        reaper::kill_leftovers(self.me.pid);
    }
}

async fn read_line(rx: pipe::Receiver) -> Option<ReadyLine> {
    let mut line = String::new();
    BufReader::new(rx).read_line(&mut line).await.ok()?;
    serde_json::from_str(line.trim()).ok()
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
