//! The command line as clap sees it: raw flags, parsed but not yet checked against each
//! other or the machine. `config.rs` turns these into validated settings; nothing here
//! touches files, the network or the environment beyond clap's own `env = ...` fallbacks.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use rota_domain::JobId;
use std::path::PathBuf;
use std::time::Duration;

mod resources;
mod worker;
pub(crate) use resources::*;
pub(crate) use worker::*;

/// Default control-plane address, for `--server` and `--listen`.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:7777";

/// rota: run jobs on a fleet of machines and keep their workers alive.
#[derive(Debug, Parser)]
#[command(name = "rota", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The control plane to talk to: host:port or a URL. Repeat it, or give a comma-separated
    /// list (ROTA_SERVER=a:7777,b:7777), for several servers of one control plane: calls go
    /// to the next one when a server is down.
    #[arg(long, global = true, env = "ROTA_SERVER", default_value = DEFAULT_ADDR, value_name = "URL",
        action = clap::ArgAction::Append, value_delimiter = ',')]
    pub(crate) server: Vec<String>,
    /// Admin token for operator calls [default: the local admin.token file].
    #[arg(long, global = true, env = "ROTA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// Print JSON instead of a table (shapes are documented in the README).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Whether `--server` (or ROTA_SERVER) was given, not defaulted; set after parsing.
    #[arg(skip)]
    pub(crate) server_given: bool,
    /// Ids of the innermost subcommand's arguments that were given, not defaulted.
    #[arg(skip)]
    pub(crate) explicit: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the control plane in the foreground (bare `rota server`), or in the background.
    ///
    /// A start on a database that holds no tokens yet creates admin.token and join.token
    /// (mode 0600) in the data directory, or reuses the files there, and stores their
    /// hashes in the database. Later starts need the files that match (exit 78 without
    /// them, saying where to copy them from); deleting a file does not replace a token,
    /// `rota server rotate-token` does.
    Server(Box<ServerCmd>),
    /// Run a server and one local worker in one process (SQLite): the zero-setup way to try rota.
    Dev(DevArgs),
    /// Run a worker (bare `rota worker` = `rota worker run`).
    Worker(Box<WorkerArgs>),
    /// Submit, inspect and control jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Show job routing (queue aliases and job-name routes applied by `job submit`).
    Routing {
        #[command(subcommand)]
        command: RoutingCommand,
    },
    /// Copy a stopped SQLite control plane into an empty PostgreSQL database.
    ///
    /// Copies jobs (with their steps, attempts and logs, byte for byte), workers and their
    /// sessions, revokes, paused queues and the token hashes, so the same admin.token and
    /// join.token files keep working. Stop the server first (a running one is refused);
    /// the source is only read. The target must be empty; the copy is one transaction, so
    /// a failed or interrupted copy leaves it empty and can be run again.
    ///
    /// Example:
    ///   rota server stop
    ///   rota migrate --from sqlite:$HOME/.local/share/rota/rota.db --to postgres://rota@db:5432/rota
    ///   rota server start --database postgres://rota@db:5432/rota
    #[command(verbatim_doc_comment)]
    Migrate(MigrateArgs),
    /// Create or update declared resources from files (all or nothing).
    ///
    /// Prints one line per resource: created, configured or unchanged. An invalid
    /// document refuses the whole apply (exit 2, naming file:line:column); nothing of it
    /// is stored.
    ///
    /// Example:
    ///   rota apply -f workflows/
    #[command(verbatim_doc_comment)]
    Apply(ApplyArgs),
    /// Show what `rota apply -f` would change, without changing it (exit 1 if it would).
    Diff(DiffArgs),
    /// List declared resources of a kind, or show one.
    Get(GetArgs),
    /// Delete declared resources: `rota delete KIND NAME` or `rota delete -f FILE`.
    Delete(DeleteArgs),
    /// Start a workflow (declared with `rota apply`) as a job.
    ///
    /// Example:
    ///   rota run build --input version=1.2 --follow
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// `rota migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The SQLite database to copy (sqlite:PATH or PATH; its logs file PATH.logs comes along).
    #[arg(long, value_name = "sqlite:PATH")]
    pub(crate) from: PathBuf,
    /// The empty PostgreSQL database to copy into (postgres://USER@HOST:PORT/DATABASE).
    #[arg(long, value_name = "postgres://…")]
    pub(crate) to: PathBuf,
    /// TEST ONLY: after the first batch of this table is written, say so and wait forever
    /// (tests kill the copy there).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "TABLE")]
    pub(crate) test_stall_in: Option<String>,
}

impl MigrateArgs {
    /// `--test-stall-in` (always off without the `test-hooks` feature).
    pub(crate) fn test_stall_in(&self) -> Option<String> {
        #[cfg(feature = "test-hooks")]
        return self.test_stall_in.clone();
        #[cfg(not(feature = "test-hooks"))]
        None
    }
}

/// `rota routing ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RoutingCommand {
    /// Print the active routing and where it came from (`--json` for JSON).
    Dump {
        /// Print a starter routing file instead.
        #[arg(long)]
        sample: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerCmd {
    #[command(subcommand)]
    pub(crate) command: Option<ServerCommand>,
    #[command(flatten)]
    pub(crate) run: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerCommand {
    /// Start the server in the background (or reuse it); returns once it listens.
    Start(Box<ServerStartArgs>),
    /// Stop the background server (SIGTERM: graceful; KILL after 20 s).
    Stop,
    /// Stop the background server, then start it again with its saved flags.
    Restart(WaitArgs),
    /// Show the background server: local process and whether it answers.
    Status,
    /// Replace the admin or join token: writes a new token file and its hash to the store.
    ///
    /// The store keeps only the tokens' hashes, shared by every server on it; deleting a
    /// token file does not replace a token (a server whose store holds one refuses to start
    /// without the file). This command generates a new token into the file (mode 0600) and
    /// stores its hash, with the server stopped or running. A running server switches to the
    /// new token within 30 s.
    /// Clients and workers on other machines need the new file.
    RotateToken(RotateTokenArgs),
}

/// `rota server rotate-token`.
#[derive(Debug, Args)]
pub(crate) struct RotateTokenArgs {
    /// Which token: `admin` (ROTA_TOKEN, admin.token) or `join` (ROTA_JOIN_TOKEN, join.token).
    pub(crate) kind: TokenKind,
    /// The server's database: a SQLite file or a postgres:// URL [default: <data dir>/rota.db].
    #[arg(long, env = "ROTA_DATABASE", value_name = "PATH|URL")]
    pub(crate) database: Option<PathBuf>,
}

/// A token `rota server rotate-token` replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokenKind {
    /// The operator token.
    Admin,
    /// The token workers join with.
    Join,
}

#[derive(Debug, Args)]
pub(crate) struct ServerStartArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) supervision: SupervisionArgs,
}

/// Storage and timing flags shared by `server` and `dev`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on. Port 0 picks a free port (the bound URL is printed).
    #[arg(long, default_value = DEFAULT_ADDR, value_name = "ADDR")]
    pub(crate) listen: String,
    /// Accept a non-loopback --listen address (other machines can then reach the server).
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// The database: a SQLite file (PATH or sqlite:PATH; one server) [default: <data
    /// dir>/rota.db], or PostgreSQL (postgres://USER@HOST:PORT/DB; any number of servers).
    #[arg(long, env = "ROTA_DATABASE", value_name = "PATH|URL")]
    pub(crate) database: Option<PathBuf>,
    /// Delete finished jobs and their logs after this long.
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) retention: Duration,
    /// How often workers heartbeat.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) heartbeat_interval: Duration,
    /// An attempt whose worker has not heartbeated for this long is lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) lease_ttl: Duration,
    /// Total size of stored step logs (live bytes, e.g. 2GiB). Past it the oldest finished
    /// jobs' logs are deleted, then new output is cut; both are shown with the logs
    /// [default: 25% of the free space on the database's filesystem at start].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) log_quota: Option<u64>,
    /// PostgreSQL only: connections this server keeps in its pool at most (the bus and
    /// the leadership use one more each) [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) db_pool_size: Option<u32>,
    /// PostgreSQL only: a statement running longer is cancelled by the database and its
    /// request fails; 0 keeps the database's own statement_timeout [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) db_statement_timeout: Option<Duration>,
    /// PostgreSQL only: longest a request waits for a free pooled connection; then it gets
    /// 503 with Retry-After (clients retry or fail over) [default: 5s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) db_pool_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Steps the local worker runs at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) concurrency: u32,
    /// Where steps run [default: <data dir>/workspace].
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
}

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
    Fleet(Box<crate::commands::fleet::FleetCmd>),
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
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_autoscale, conflicts_with = "concurrency")]
    pub(crate) autoscale: Option<(u32, u32)>,
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

#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Submit a job from a document, --step flags, or a command after `--`.
    Submit(Box<SubmitArgs>),
    /// List jobs, newest first (at most --limit, default 50).
    List(ListArgs),
    /// Show a job with its steps and attempts.
    Show {
        /// The job's id.
        id: JobId,
    },
    /// Write a job's output to stdout, byte for byte.
    Logs(LogsArgs),
    /// Cancel a job: running steps are stopped, nothing more starts.
    Cancel {
        /// The job's id.
        id: JobId,
    },
    /// Run a finished job's failed, cancelled or skipped steps again.
    Retry {
        /// The job's id.
        id: JobId,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// Job document (YAML or JSON; `-` reads stdin). Flags below override or extend it.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Job name, shown in listings.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Queue to submit to [default: default].
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Run only on this host (host name or worker name).
    #[arg(long = "on", value_name = "HOST")]
    pub(crate) on: Option<String>,
    /// Run only on workers carrying this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) priority: Option<i32>,
    /// Add a step running CMD with `sh -c` (repeatable).
    #[arg(long = "step", value_name = "NAME=CMD", value_parser = parse_key_value)]
    pub(crate) steps: Vec<(String, String)>,
    /// Make STEP wait for DEP,... to succeed (repeatable).
    #[arg(long = "needs", value_name = "STEP=DEP,...", value_parser = parse_key_value)]
    pub(crate) needs: Vec<(String, String)>,
    /// Time limit per attempt, for steps that set none.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Option<Duration>,
    /// Retries after a failure, for steps that set none.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=99))]
    pub(crate) retries: Option<u32>,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Fail the job if it has not finished by then: a duration from now (10m) or an RFC 3339 time.
    #[arg(long, value_parser = parse_deadline, value_name = "WHEN")]
    pub(crate) deadline: Option<Deadline>,
    /// Environment variable for every step (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Wait until the job ends; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Command to run as step `main`; its words are shell-quoted, so they reach the program as given.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only jobs in these states (comma-separated): queued, unschedulable, running, succeeded,
    /// failed, cancelled, revoked.
    #[arg(long, value_name = "STATE[,STATE]")]
    pub(crate) state: Option<String>,
    /// Only jobs of this queue.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// At most this many jobs, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The job's id.
    pub(crate) id: JobId,
    /// Only this step's output.
    #[arg(long)]
    pub(crate) step: Option<String>,
    /// Keep waiting for output until the job ends.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// Write `==> step S (attempt N) <==` lines to stderr even when it is not a terminal.
    #[arg(long)]
    pub(crate) headers: bool,
}

/// When a job must be done by: resolved against the clock at submit time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// This long after submission.
    In(Duration),
    /// At this instant.
    At(DateTime<Utc>),
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    rota_domain::units::parse_duration(s)
}

fn parse_deadline(s: &str) -> Result<Deadline, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(Deadline::At(at.with_timezone(&Utc)));
    }
    rota_domain::units::parse_duration(s)
        .map(Deadline::In)
        .map_err(|_| format!("'{s}' is neither a duration (10m, 1h 30m) nor an RFC 3339 time"))
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not of the form NAME=VALUE")),
    }
}

/// `MIN,MAX` with 1 <= MIN <= MAX <= 1024.
pub(crate) fn parse_autoscale(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("'{s}': expected MIN,MAX such as 2,8"))?;
    let min: u32 = a.trim().parse().map_err(|_| format!("'{a}' is not a number"))?;
    let max: u32 = b.trim().parse().map_err(|_| format!("'{b}' is not a number"))?;
    if min == 0 || min > max || max > 1024 {
        return Err(format!("'{s}': need 1 <= MIN <= MAX <= 1024"));
    }
    Ok((min, max))
}

fn parse_size(s: &str) -> Result<u64, String> {
    rota_domain::units::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_worker_is_worker_run() {
        let cli = Cli::try_parse_from(["rota", "worker", "--queue", "a", "--queue", "b"]).unwrap();
        let Command::Worker(w) = cli.command else { panic!("not worker") };
        let w = *w;
        assert!(w.command.is_none());
        assert_eq!(w.run.queues, ["a", "b"]);
        let cli = Cli::try_parse_from(["rota", "worker", "run", "--name", "n"]).unwrap();
        let Command::Worker(w) = cli.command else { panic!("not worker") };
        let w = *w;
        assert!(matches!(w.command, Some(WorkerCommand::Run(r)) if r.name.as_deref() == Some("n")));
    }

    #[test]
    fn deadlines() {
        assert!(matches!(parse_deadline("10m"), Ok(Deadline::In(d)) if d == Duration::from_secs(600)));
        assert!(matches!(parse_deadline("2030-01-01T00:00:00Z"), Ok(Deadline::At(_))));
        assert!(parse_deadline("tomorrow").is_err());
    }

    #[test]
    fn submit_argv_after_dashes() {
        let cli =
            Cli::try_parse_from(["rota", "job", "submit", "--queue", "q", "--", "sh", "-c", "echo \"$X\""])
                .unwrap();
        let Command::Job { command: JobCommand::Submit(s) } = cli.command else { panic!("not submit") };
        assert_eq!(s.command, ["sh", "-c", "echo \"$X\""]);
        assert_eq!(s.queue.as_deref(), Some("q"));
    }
}
