//! Raw flags of the background-worker commands (`rota worker start|stop|restart|status|
//! logs|heal|multi|healthcheck|diagnose` and the hidden `supervise`). Parsed only; the
//! `lifecycle` module validates them and decides what they mean.

use super::{WorkerRunArgs, parse_duration};
use clap::{Args, ValueEnum};
use rota_worker::ShutdownMode;
use std::path::PathBuf;
use std::time::Duration;

/// Which background worker: `--profile` (one per host and profile).
#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    /// Local profile [default: default].
    #[arg(long, env = "ROTA_PROFILE", value_name = "PROFILE")]
    pub(crate) profile: Option<String>,
}

/// How the supervisor restarts a crashed worker (saved with the other settings).
#[derive(Debug, Args, Default)]
pub(crate) struct SupervisionArgs {
    /// Delay before the first restart after a crash; it doubles per unstable exit up to
    /// 60s, ±20% jitter [default: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) restart_delay: Option<Duration>,
    /// This many unstable exits within --restart-window mark the worker failed [default: 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub(crate) max_restarts: Option<u32>,
    /// The window unstable exits are counted in [default: 10m].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) restart_window: Option<Duration>,
    /// A run shorter than this counts as unstable [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) min_uptime: Option<Duration>,
}

/// How long `start` waits for the worker to register.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Fail if the worker has not registered with the server within this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) wait_timeout: Duration,
    /// Return as soon as the supervisor runs, without waiting for the registration.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// How `stop` ends the worker.
#[derive(Debug, Args)]
pub(crate) struct StopModeArgs {
    /// warm: drain, soft at --drain-timeout, hard after the kill grace; soft: TERM the
    /// running steps now; hard: KILL them now.
    #[arg(long, default_value = "warm", value_parser = parse_mode, value_name = "MODE")]
    pub(crate) mode: ShutdownMode,
    /// How long a warm stop lets running steps finish [default: the worker's --drain-timeout].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) drain_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    pub(crate) run: WorkerRunArgs,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) supervision: SupervisionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
    #[command(flatten)]
    pub(crate) mode: StopModeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
    #[command(flatten)]
    pub(crate) mode: StopModeArgs,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerLogsArgs {
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
    /// The log of this `multi` node instead.
    #[arg(long, value_name = "NODE")]
    pub(crate) node: Option<String>,
    /// Keep printing what is appended.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub(crate) lines: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct HealArgs {
    /// Only say which workers would be healed.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// How long each healed worker may take to register.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) wait_timeout: Duration,
}

/// What `multi` does to its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MultiAction {
    /// Start (or reuse) each node.
    Start,
    /// Stop each node.
    Stop,
    /// Stop, then start each node.
    Restart,
    /// Show each node; exit 0 iff all run and are registered.
    Status,
}

#[derive(Debug, Args)]
pub(crate) struct MultiArgs {
    /// start, stop, restart or status.
    pub(crate) action: MultiAction,
    /// Node names; each node registers under its name.
    #[arg(required = true, value_name = "NODE")]
    pub(crate) nodes: Vec<String>,
    /// Pid file template: %n node, %h host name, %I 1-based index, %% a literal %.
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) pidfile: Option<String>,
    /// Log file template: like --pidfile, plus %d the start time (YYYYmmdd-HHMMSS).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) logfile: Option<String>,
    /// KEY=VALUE lines exported to every node (ROTA_WORKER_COMMAND may be set here).
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: Option<PathBuf>,
    /// Queue for every node (repeatable) [default: default].
    #[arg(long = "queue", value_name = "QUEUE")]
    pub(crate) queues: Vec<String>,
    /// One word of the command each node runs (repeatable) [default: $ROTA_WORKER_COMMAND,
    /// else `rota worker run`].
    #[arg(long = "command", value_name = "WORD", allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
    /// The command each node runs, as one shell-like line.
    #[arg(long, value_name = "LINE", conflicts_with = "command")]
    pub(crate) command_line: Option<String>,
    /// Token to join the server with [default: the local join.token file].
    #[arg(long, env = "ROTA_JOIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) join_token: Option<String>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) mode: StopModeArgs,
    #[command(flatten)]
    pub(crate) supervision: SupervisionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
    /// The `multi` node to check.
    #[arg(long, value_name = "NODE")]
    pub(crate) node: Option<String>,
    /// Find the worker by its pid file (a template: %n is --node).
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) pidfile: Option<String>,
    /// Accepted for compatibility with `multi`'s flags; not needed.
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) logfile: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DiagnoseArgs {
    /// Pid file (template) to check [default: those of every known worker].
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) pidfile: Option<String>,
    /// Log file (template) to check [default: those of every known worker].
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) logfile: Option<String>,
    /// Env file to parse.
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: Option<PathBuf>,
    /// Nodes to expand %n with (repeatable) [default: every known node].
    #[arg(long = "node", value_name = "NODE")]
    pub(crate) nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SuperviseArgs {
    /// The worker's key (its metadata file name).
    #[arg(long)]
    pub(crate) key: String,
    /// Give up (state failed) if the first run has not registered within this long.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) ready_timeout: Option<Duration>,
    /// The first worker it runs takes its name over (`worker start --replace`); restarts
    /// do not.
    #[arg(long)]
    pub(crate) replace: bool,
}

fn parse_mode(s: &str) -> Result<ShutdownMode, String> {
    s.parse::<ShutdownMode>().map_err(|e| e.to_string())
}
