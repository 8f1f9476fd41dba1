//! Flags of the fleet verbs of `rota worker` (`ping`, `inspect`, `stats`, `revoke`,
//! `shutdown`, `pause`, `resume`). Parsed only; `commands/fleet/` sends them.

use clap::{Args, Subcommand};
use rota_api_types::fleet::ShutdownMode;
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
    /// The fleet as the server sees it: workers (state, heartbeat age, concurrency) and
    /// the supervisors of background workers (state, last error), of the namespace.
    List,
    /// Cut a worker off: its session ends on every server at once. Its next call is refused
    /// as forgotten, on which it kills its running steps and exits 78; the attempts it held
    /// are lost and retried elsewhere. Without --block it may register again with the join
    /// token (a restart brings it back); with --block its name is refused until `unblock`.
    ///
    /// Example:
    ///   rota worker forget build-7 --block
    #[command(verbatim_doc_comment)]
    Forget(ForgetArgs),
    /// Let a worker name forgotten with --block register again.
    Unblock(NameArg),
}

/// `forget` flags.
#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The worker's name (as `rota worker list` shows it).
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// Also refuse the name's registrations until `rota worker unblock NAME`.
    #[arg(long)]
    pub(crate) block: bool,
}

/// A worker name.
#[derive(Debug, Args)]
pub(crate) struct NameArg {
    /// The worker's name.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
}

/// Which workers, and how long to wait for them.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Only this worker (repeatable); default: every live worker.
    #[arg(long = "worker", value_name = "NAME")]
    pub(crate) workers: Vec<String>,
    /// How long to collect replies.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
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
    #[arg(long, value_parser = super::parse_duration)]
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
    #[arg(long, default_value = "warm", value_parser = parse_fleet_mode)]
    pub(crate) mode: ShutdownMode,
    /// How long to wait for acknowledgements.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub(crate) timeout: Duration,
}

/// A queue name.
#[derive(Debug, Args)]
pub(crate) struct QueueArg {
    /// The queue.
    #[arg(long, value_name = "Q")]
    pub(crate) queue: String,
}

fn parse_fleet_mode(s: &str) -> Result<ShutdownMode, String> {
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
