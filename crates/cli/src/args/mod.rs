//! The command line as clap sees it: raw flags, parsed but not yet checked against each
//! other or the machine. `config.rs` turns these into validated settings; nothing here
//! touches files, the network or the environment beyond clap's own `env = ...` fallbacks.

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use rota_domain::JobId;
use std::path::PathBuf;
use std::time::Duration;

mod fleet;
mod resources;
mod secrets;
mod server;
mod worker;
pub(crate) use fleet::*;
pub(crate) use resources::*;
pub(crate) use secrets::*;
pub(crate) use server::*;
pub(crate) use worker::*;

/// A `--namespace` value: checked as the server checks it.
fn parse_namespace(s: &str) -> Result<String, String> {
    rota_domain::namespace::check("--namespace", s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

/// Default control-plane address, for `--server` and `--listen`.
pub(crate) const DEFAULT_ADDR: &str = rota_domain::settings::ServerSettings::DEFAULT_LISTEN;

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
    /// A PEM file of CA certificates to trust, besides the system roots, for a server
    /// reached over https:// (a private CA, a self-signed certificate).
    #[arg(long, global = true, env = "ROTA_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Admin token for operator calls [default: the local admin.token file].
    #[arg(long, global = true, env = "ROTA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// The namespace to act in [default: default]. Workers, jobs, queues and resources
    /// belong to one; `worker run|start|multi` join it. Namespaces organise a fleet, they
    /// are not a security boundary (the admin token reaches every one).
    #[arg(long, global = true, env = "ROTA_NAMESPACE", value_name = "NS", value_parser = parse_namespace)]
    pub(crate) namespace: Option<String>,
    /// Listings: show every namespace (ignored by commands that list nothing).
    #[arg(long, global = true)]
    pub(crate) all_namespaces: bool,
    /// Print JSON instead of a table (shapes are documented in the README).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Whether `--server` (or ROTA_SERVER) was given, not defaulted; set after parsing.
    #[arg(skip)]
    pub(crate) server_given: bool,
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
    /// Secrets: named key/value data steps and worker configs refer to
    /// (`env: {TOKEN: {secret: NAME/KEY}}`), stored encrypted, masked in step output.
    /// List them with `rota get secret`, declare them with `rota apply` (kind Secret).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The control plane's admin and join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the control plane's events: jobs, attempts, log activity, workers, resources.
    ///
    /// Without -f prints what the server's replay buffer holds (its last 4096 events) and
    /// exits; with -f keeps printing new ones (reconnecting where it left off). A `resync`
    /// line means events were lost on the way: reload what you show. --json prints one
    /// JSON object per line.
    ///
    /// Example:
    ///   rota events -f --job 0196… --json
    #[command(verbatim_doc_comment)]
    Events(EventsArgs),
    /// A live terminal view: fleet, queues and running jobs, over the event stream.
    ///
    /// Shows workers and background workers' supervisors (state, heartbeat or report age,
    /// steps running of the concurrency; unhealthy ones in red), queues (ready, running,
    /// paused, how long the oldest queued job has waited) and running jobs, refreshed as
    /// events arrive (at most a few times a second, and every 5 s whatever happens). Honours
    /// --namespace and --all-namespaces. Needs a terminal: with stdout not one (a pipe, a
    /// file) it exits 78 without touching it.
    ///
    /// Keys:
    ///   ↑/↓ j/k        move the selection
    ///   Tab/S-Tab      switch pane (fleet, queues, running jobs)
    ///   h              heal the fleet (as `rota worker heal --fleet`); progress on the heal line
    ///   c              cancel the selected running job (asks y/n)
    ///   l/Enter        show or hide the selected job's log tail
    ///   r              refresh now
    ///   ?              show or hide the keys
    ///   q/Esc/Ctrl-C   quit (Esc closes help, logs or a question first)
    #[command(verbatim_doc_comment)]
    Top,
    /// Serve the Model Context Protocol on stdin/stdout, for AI assistants.
    ///
    /// Tools: submit_job, run_workflow, list_jobs, show_job, job_logs, cancel_job,
    /// retry_job, list_workers, unhealthy_workers, heal_workers, apply_resources,
    /// get_resources. They act with this command line's server, token and namespace.
    /// Logs go to stderr (ROTA_LOG).
    ///
    /// Example:
    ///   claude mcp add rota -- rota mcp
    #[command(verbatim_doc_comment)]
    Mcp,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// `rota events`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Keep printing new events until interrupted.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// Only this job's events.
    #[arg(long, value_name = "ID")]
    pub(crate) job: Option<rota_domain::JobId>,
    /// Only this worker's events (its sessions and the attempts it holds).
    #[arg(long, value_name = "NAME")]
    pub(crate) worker: Option<String>,
    /// Only these kinds (job, attempt, logs, worker, resource, supervisor, heal); repeat
    /// or separate with commas.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub(crate) kind: Vec<String>,
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

#[derive(Debug, Default, Args)]
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
    /// Only jobs whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub(crate) name: Option<String>,
    /// Only the runs of this schedule.
    #[arg(long, value_name = "NAME")]
    pub(crate) schedule: Option<String>,
    /// Only jobs submitted before this one (the next page: the last id of the previous one).
    #[arg(long, value_name = "JOB_ID")]
    pub(crate) before: Option<JobId>,
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
    /// Start with about the last SIZE of output (whole chunks; e.g. 64KiB) instead of the
    /// beginning; with -f, carries on from there.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) tail: Option<u64>,
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

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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

/// `rota token …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Replace the admin or join token on every server of the control plane, without a
    /// restart (the servers share it through their store).
    ///
    /// The new token goes where this command found the old one: the local admin.token or
    /// join.token file is rewritten (0600); otherwise (a token given by --token/ROTA_TOKEN,
    /// or no local join.token) it is printed on stdout, once. With --grace the replaced
    /// token keeps working until the grace ends; background workers' supervisors linked to
    /// the server receive a new join token meanwhile and save it, so their restarts keep
    /// registering. Without a grace the old token is refused at once.
    ///
    /// Example:
    ///   rota token rotate join --grace 10m
    #[command(verbatim_doc_comment)]
    Rotate(TokenRotateArgs),
}

/// `rota token rotate` flags.
#[derive(Debug, Args)]
pub(crate) struct TokenRotateArgs {
    /// Which token.
    #[arg(value_enum)]
    pub(crate) kind: TokenKind,
    /// Keep accepting the replaced token this long (at most 7d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) grace: Option<Duration>,
}
