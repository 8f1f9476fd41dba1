//! Raw flags of the background-worker commands (`rota worker start|stop|restart|status|
//! logs|heal|multi|healthcheck|diagnose` and the hidden `supervise`). Parsed only; the
//! `lifecycle` module validates them and decides what they mean.

use super::{FleetCmd, parse_duration, parse_size};
use clap::Subcommand;
use clap::{Args, ValueEnum};
use rota_domain::settings::{Autoscale, WorkerSettings};
use rota_worker::ShutdownMode;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct WorkerArgs {
    #[command(subcommand)]
    pub(crate) command: Option<WorkerCommand>,
    #[command(flatten)]
    pub(crate) run: WorkerRunArgs,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the largest variant would only complicate matching.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WorkerCommand {
    /// Run the worker in the foreground (SIGTERM/Ctrl-C: drain, a second one: stop now).
    Run(WorkerRunArgs),
    /// Start (or reuse) this host's background worker; returns once it registered.
    Start(Box<StartArgs>),
    /// Stop the background worker: warm, then soft, then hard (each phase bounded; at most
    /// 16 s once its control port stops answering).
    Stop(StopArgs),
    /// Stop the background worker, then start it again with its saved settings.
    Restart(RestartArgs),
    /// Show the background worker: local process, the server's view, a diagnosis.
    Status(StatusArgs),
    /// Show the background worker's log.
    Logs(WorkerLogsArgs),
    /// Start background workers that failed or died unexpectedly again.
    Heal(HealArgs),
    /// Manage several background workers (nodes) with templated pid and log files.
    Multi(Box<MultiArgs>),
    /// Exit 0 iff the background worker is alive (for ExecStartPost= and probes).
    Healthcheck(HealthcheckArgs),
    /// Start the background worker at login/boot: a systemd user unit (where systemd runs).
    Enable(ProfileArgs),
    /// Remove the unit `enable` wrote.
    Disable(ProfileArgs),
    /// Check pid files, log files, env files, directories and ports for problems.
    Diagnose(DiagnoseArgs),
    /// The background worker's supervisor (started by `rota worker start`; not for people).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
    /// Fleet control: ping, inspect, stats, revoke, shutdown, pause, resume.
    #[command(flatten)]
    Fleet(Box<FleetCmd>),
}

#[derive(Debug, Args)]
pub(crate) struct WorkerRunArgs {
    /// Token to join the server with [default: the local join.token file].
    #[arg(long, env = "ROTA_JOIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) join_token: Option<String>,
    /// Worker name [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Queue to take steps from (repeatable) [default: default].
    #[arg(long = "queue", value_name = "QUEUE")]
    pub(crate) queues: Vec<String>,
    /// Tag this worker carries, for jobs that ask for it (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Steps run at once [default: the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) concurrency: Option<u32>,
    /// On shutdown, how long running steps may finish before they are stopped [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) drain_timeout: Option<Duration>,
    /// Where steps run [default: <data dir>/workspace].
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// Local profile: one background worker per host and profile [default: default].
    #[arg(long, env = "ROTA_PROFILE", value_name = "PROFILE")]
    pub(crate) profile: Option<String>,
    /// Serve the local control port (shutdown, health) here; loopback only.
    #[arg(long, env = "ROTA_WORKER_BIND", value_name = "ADDR")]
    pub(crate) bind: Option<String>,
    /// Write the log to <state dir>/rota/workers/<profile>.foreground.log instead of stderr
    /// (a background worker's own log is <profile>.log).
    #[arg(long)]
    pub(crate) log_file: bool,
    /// Write the log to this file instead of stderr (overrides --log-file).
    #[arg(long, value_name = "PATH")]
    pub(crate) log_path: Option<PathBuf>,
    /// Autoscale between MIN and MAX concurrent steps, e.g. `2,8` (instead of --concurrency).
    #[arg(long, value_name = "MIN,MAX", value_parser = Autoscale::parse, conflicts_with = "concurrency")]
    pub(crate) autoscale: Option<Autoscale>,
    /// Slots added per autoscale step up [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) scale_up_step: Option<u32>,
    /// Slots removed per autoscale step down [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) scale_down_step: Option<u32>,
    /// Idle time (nothing running) before scaling down [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) idle_period: Option<Duration>,
    /// Least time between two concurrency changes [default: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) cooldown: Option<Duration>,
    /// Run at most N steps, then exit to be replaced (a background worker's supervisor
    /// starts a fresh one under the same name).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_jobs: Option<u64>,
    /// Exit to be replaced once the worker's own memory (RSS) passes SIZE, e.g. `512MiB`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_memory: Option<u64>,
    /// Run every step (and the worker configs' setup) as USER, its primary group (or
    /// GROUP) and supplementary groups, with its HOME; for a worker running as root.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub(crate) run_as: Option<String>,
    /// Take the name over from a live worker of another instance (which then exits 78
    /// instead of taking it back). Applies once, to this start: never saved with a
    /// background worker's settings.
    #[arg(long)]
    pub(crate) replace: bool,
    /// TEST ONLY: exit abruptly (code 1, steps left behind) whenever this file exists.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "PATH")]
    pub(crate) test_crash_file: Option<PathBuf>,
    /// TEST ONLY: accept shutdown requests on the control port but never answer them.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub(crate) test_hang_control: bool,
    /// BENCHMARK ONLY: hold this many MiB of touched memory for the worker's whole life, so
    /// bench/run can show that spawning a step does not slow down with a large worker RSS.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) bench_ballast_mib: Option<u32>,
}

/// The test and bench hooks exist only with the cargo feature `test-hooks` (tests and
/// bench/run turn it on); without it these answer "off", so call sites need no cfg.
impl WorkerRunArgs {
    /// The worker settings these flags give (`server`: the resolved `--server` when one
    /// was given). `--join-token`, `--bind`, the log flags and `--replace` say how this
    /// one process runs, not how the worker works, so they are not settings.
    /// The settings these flags give, with the global `--server` and `--namespace`.
    pub(crate) fn settings(&self, server: Option<String>, namespace: Option<String>) -> WorkerSettings {
        WorkerSettings {
            server,
            namespace,
            name: self.name.clone(),
            profile: self.profile.clone(),
            queues: self.queues.clone(),
            tags: self.tags.clone(),
            concurrency: self.concurrency,
            autoscale: self.autoscale,
            scale_up_step: self.scale_up_step,
            scale_down_step: self.scale_down_step,
            idle_period: self.idle_period,
            cooldown: self.cooldown,
            max_jobs: self.max_jobs,
            max_memory: self.max_memory,
            drain_timeout: self.drain_timeout,
            workspace: self.workspace.clone(),
            run_as: self.run_as.clone(),
        }
    }

    /// `--test-crash-file`.
    pub(crate) fn test_crash_file(&self) -> Option<PathBuf> {
        #[cfg(feature = "test-hooks")]
        return self.test_crash_file.clone();
        #[cfg(not(feature = "test-hooks"))]
        None
    }

    /// `--test-hang-control`.
    pub(crate) fn test_hang_control(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.test_hang_control;
        #[cfg(not(feature = "test-hooks"))]
        false
    }
}

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
    /// Heal through the server: every failed background worker of the namespace whose
    /// supervisor is linked, on whichever host it runs (events stream back).
    #[arg(long)]
    pub(crate) fleet: bool,
    /// With --fleet: only this worker (its name).
    #[arg(long, value_name = "NAME", requires = "fleet")]
    pub(crate) worker: Option<String>,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::args::{Cli, Command, WorkerCommand};
    use clap::Parser;
    use rota_domain::settings::{Autoscale, WorkerSettings};
    use std::time::Duration;

    fn parsed(argv: &[String]) -> WorkerSettings {
        let cli =
            Cli::try_parse_from(std::iter::once("rota".to_string()).chain(argv.iter().cloned())).unwrap();
        let server = crate::config::server_url(&cli.global.server).unwrap();
        match cli.command {
            Command::Worker(w) => match w.command {
                Some(WorkerCommand::Run(run)) => run.settings(Some(server), cli.global.namespace.clone()),
                other => panic!("not worker run: {other:?}"),
            },
            other => panic!("not worker: {other:?}"),
        }
    }

    /// Settings → derived argv → the flags parsed again → the same settings: the command
    /// line a supervisor runs means exactly what was saved.
    #[test]
    fn derived_command_lines_parse_back_to_the_same_settings() {
        let all = WorkerSettings {
            server: Some("http://a:7777,http://b:7001".into()),
            name: Some("w one".into()),
            profile: Some("ci".into()),
            namespace: Some("team-a".into()),
            queues: vec!["build".into(), "deploy".into()],
            tags: vec!["gpu".into()],
            concurrency: None,
            autoscale: Some(Autoscale { min: 2, max: 6 }),
            scale_up_step: Some(3),
            scale_down_step: Some(1),
            idle_period: Some(Duration::from_millis(20_500)),
            cooldown: Some(Duration::from_secs(90)),
            max_jobs: Some(500),
            max_memory: Some(3 << 29),
            drain_timeout: Some(Duration::from_secs(3725)),
            workspace: Some("/srv/w s".into()),
            run_as: Some("nobody:nogroup".into()),
        };
        assert_eq!(parsed(&all.run_args()), all);
        let fixed = WorkerSettings {
            server: Some("http://127.0.0.1:7777".into()),
            concurrency: Some(8),
            ..WorkerSettings::default()
        };
        assert_eq!(parsed(&fixed.run_args()), fixed);
    }
}
