//! `rota worker ping|inspect|stats|revoke|shutdown|pause|resume`: fleet control from one
//! command. Commands reach busy workers through their control long-polls (the server fans
//! them out); replies are collected until `--timeout` and workers that did not answer are
//! always listed, never dropped. Each verb has `--json` with a documented shape.

mod inspect;
mod ping;
mod queues;
mod revoke;
mod shutdown;
mod stats;

use crate::args::GlobalArgs;
use crate::commands::job::Api;
use crate::config::Paths;
use anyhow::Result;
use clap::{Args, Subcommand};
use rota_api_types::fleet::{FleetCommand, FleetRequest, FleetResponse, ShutdownMode};
use std::process::ExitCode;
use std::time::Duration;

/// The fleet verbs of `rota worker`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCmd {
    /// Ask workers to answer; prints name, host and round trip (exit 1 if any stayed silent).
    Ping(Target),
    /// Steps in flight per worker (job, step, attempt, pid, running time); `--revoked` adds
    /// the revokes each holds.
    Inspect(InspectArgs),
    /// Per worker: concurrency (max and active), in flight, totals, uptime, RSS; and queue
    /// depth and paused state from the server.
    Stats(Target),
    /// Revoke jobs durably: queued ones never start, on any worker, even after restarts.
    Revoke(RevokeArgs),
    /// Shut workers down: warm (drain), soft (TERM running steps) or hard (KILL them).
    Shutdown(ShutdownArgs),
    /// Pause a queue: no worker claims from it until `resume` (persisted).
    Pause(QueueArg),
    /// Resume a paused queue.
    Resume(QueueArg),
}

/// Which workers, and how long to wait for them.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Only this worker (repeatable); default: every live worker.
    #[arg(long = "worker", value_name = "NAME")]
    pub(crate) workers: Vec<String>,
    /// How long to collect replies.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

/// `inspect` flags.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Also list the revokes each worker holds.
    #[arg(long)]
    pub(crate) revoked: bool,
}

/// `revoke` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["jobs", "keys"])))]
pub(crate) struct RevokeArgs {
    /// Job ids (issued by the server at submit; an unknown id is refused).
    #[arg(value_name = "JOB")]
    pub(crate) jobs: Vec<rota_domain::JobId>,
    /// An idempotency key (repeatable): revokes the job submitted with it, now or later.
    #[arg(long = "key", value_name = "K")]
    pub(crate) keys: Vec<String>,
    /// Also stop running steps: the signal to their process group, then KILL after the grace.
    #[arg(long)]
    pub(crate) terminate: bool,
    /// Signal for --terminate (name or number).
    #[arg(long, default_value = "TERM", value_parser = parse_signal)]
    pub(crate) signal: i32,
    /// Forget the revoke after this long (workers forget it too; a key no longer binds).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) expires: Option<Duration>,
}

/// `shutdown` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["workers", "all"])))]
pub(crate) struct ShutdownArgs {
    /// The worker to stop (repeatable).
    #[arg(long = "worker", value_name = "NAME")]
    pub(crate) workers: Vec<String>,
    /// Every live worker.
    #[arg(long)]
    pub(crate) all: bool,
    /// warm: drain; soft: TERM running steps, grace, KILL; hard: KILL at once.
    #[arg(long, default_value = "warm", value_parser = parse_mode)]
    pub(crate) mode: ShutdownMode,
    /// How long to wait for acknowledgements.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

/// A queue name.
#[derive(Debug, Args)]
pub(crate) struct QueueArg {
    /// The queue.
    #[arg(long, value_name = "Q")]
    pub(crate) queue: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    rota_domain::units::parse_duration(s)
}

fn parse_mode(s: &str) -> Result<ShutdownMode, String> {
    match s {
        "warm" => Ok(ShutdownMode::Warm),
        "soft" => Ok(ShutdownMode::Soft),
        "hard" => Ok(ShutdownMode::Hard),
        _ => Err(format!("'{s}' is not a mode; use warm, soft or hard")),
    }
}

/// `TERM`, `SIGKILL`, `9`, ... → the signal number.
pub(crate) fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("{n} is not a signal number")) };
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        _ => {
            return Err(format!(
                "'{s}' is not a signal; use TERM, INT, QUIT, KILL, HUP, USR1, USR2 or a number"
            ));
        }
    };
    Ok(n)
}

pub(crate) async fn run(global: &GlobalArgs, cmd: FleetCmd, paths: &Paths) -> Result<ExitCode> {
    let api = Api::connect(global, paths)?;
    let json = global.json;
    match cmd {
        FleetCmd::Ping(t) => ping::run(&api, &t, json).await,
        FleetCmd::Inspect(a) => inspect::run(&api, &a, json).await,
        FleetCmd::Stats(t) => stats::run(&api, &t, json).await,
        FleetCmd::Revoke(a) => revoke::run(&api, &a, json).await,
        FleetCmd::Shutdown(a) => shutdown::run(&api, &a, json).await,
        FleetCmd::Pause(q) => queues::run(&api, &q.queue, true, json).await,
        FleetCmd::Resume(q) => queues::run(&api, &q.queue, false, json).await,
    }
}

/// Sends `command` to the targeted workers and returns what came back.
pub(crate) async fn ask(api: &Api, command: FleetCommand, target: &Target) -> Result<FleetResponse> {
    let req = FleetRequest {
        command,
        workers: target.workers.clone(),
        timeout_ms: Some(u64::try_from(target.timeout.as_millis()).unwrap_or(u64::MAX)),
        mode: None,
    };
    api.client.fleet(&req).await.map_err(|e| api.error(e, None))
}

/// Exit 0 when every asked worker answered, 1 when some did not (or none was live).
pub(crate) fn exit_for(resp: &FleetResponse) -> ExitCode {
    if resp.no_reply.is_empty() && !resp.replies.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The "did not answer" lines every table ends with.
pub(crate) fn write_silent(out: &mut crate::output::Out, resp: &FleetResponse) -> Result<()> {
    if resp.replies.is_empty() && resp.no_reply.is_empty() {
        writeln!(out, "no live worker")?;
    }
    for n in &resp.no_reply {
        writeln!(out, "{}: did not answer ({})", n.worker, n.why)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("FOO").is_err());
        assert!(parse_signal("99").is_err());
    }
}
