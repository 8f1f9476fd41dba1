//! One module per command. Each takes its validated settings and returns the exit code;
//! errors bubble up to `main` as `anyhow::Error` (wrapped in `Failure` when they must not
//! exit 1).

mod completions;
mod dev;
mod events;
pub(crate) mod fleet;
pub(crate) mod job;
mod mcp;
mod migrate;
pub(crate) mod resources;
mod routing;
mod secret;
mod server;
mod server_bg;
mod token;
mod top;
pub(crate) mod worker;
mod worker_run;

use crate::args::{Cli, Command, RoutingCommand, ServerCmd, WorkerArgs, WorkerCommand};
use crate::config::Paths;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// Runs the parsed command line: the one place a command is matched to its code. The
/// background-worker commands and the supervisor run without an async runtime (the
/// supervisor builds its own, single-threaded one); a worker's step spawner starts before
/// the runtime does.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Completions { shell } => completions::run(shell),
        Command::Server(args) => match *args {
            ServerCmd { command: None, run } => block_on(server::run(&run, &Paths::from_env()?)),
            ServerCmd { command: Some(command), .. } => server_bg::run(global, command, &Paths::from_env()?),
        },
        Command::Dev(args) => {
            let paths = Paths::from_env()?;
            let spawner = start_spawner(None)?;
            block_on(dev::run(&args, global.namespace.as_deref(), &paths, Some(spawner)))
        }
        Command::Worker(args) => match *args {
            WorkerArgs { command: Some(WorkerCommand::Supervise(args)), .. } => {
                init_tracing();
                // The link reads the join token from the file the worker reads it from.
                let link = Paths::from_env().ok().map(|p| rota_lifecycle::supervisor::link::LinkConfig {
                    token_file: p.join_token(),
                    host: rota_worker::host_name(),
                    ca_cert: None,
                });
                let args = rota_lifecycle::supervisor::SuperviseArgs {
                    key: args.key,
                    ready_timeout: args.ready_timeout,
                    replace: args.replace,
                    link,
                };
                Ok(rota_lifecycle::supervisor::run(&args)?)
            }
            WorkerArgs { command: Some(WorkerCommand::Run(run)), .. } | WorkerArgs { command: None, run } => {
                let paths = Paths::from_env()?;
                // Looked up before the helpers start, which become that user themselves; a
                // refusal is reported (exit 78) by the worker's own start.
                let run_as = run.run_as.as_deref().map(rota_worker::RunAs::resolve).transpose();
                let spawner = start_spawner(run_as.as_ref().ok().and_then(Option::as_ref))?;
                block_on(worker_run::run(global, &run, &paths, Some(spawner), run_as))
            }
            WorkerArgs { command: Some(WorkerCommand::Fleet(fleet)), .. } => {
                block_on(fleet::run(global, *fleet, &Paths::from_env()?))
            }
            WorkerArgs { command: Some(command), .. } => worker::run(global, command, &Paths::from_env()?),
        },
        Command::Routing { command: RoutingCommand::Dump { sample } } => {
            let loaded = crate::routing::load_active()?;
            routing::dump(&loaded, global.json, sample)
        }
        Command::Job { command } => block_on(job::run(global, command, &Paths::from_env()?)),
        Command::Migrate(args) => block_on(migrate::run(&args)),
        Command::Apply(args) => block_on(resources::apply(global, &args, &Paths::from_env()?)),
        Command::Diff(args) => block_on(resources::diff(global, &args, &Paths::from_env()?)),
        Command::Get(args) => block_on(resources::get(global, &args, &Paths::from_env()?)),
        Command::Delete(args) => block_on(resources::delete(global, &args, &Paths::from_env()?)),
        Command::Run(args) => block_on(resources::run(global, &args, &Paths::from_env()?)),
        Command::Secret { command } => block_on(secret::run(global, command, &Paths::from_env()?)),
        Command::Token { command } => block_on(token::run(global, command, &Paths::from_env()?)),
        Command::Events(args) => block_on(events::run(global, &args, &Paths::from_env()?)),
        Command::Top => top::run(global, &Paths::from_env()?),
        Command::Mcp => block_on(mcp::run(global, &Paths::from_env()?)),
    }
}

/// Runs `command` on a multi-threaded runtime built for it.
pub(crate) fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(command: F) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

/// Logs to stderr, filtered by `ROTA_LOG` (default `info`), for the long-running commands.
/// The log filter when `ROTA_LOG` is not set: info, but the PostgreSQL driver's relayed
/// server notices ("relation … already exists, skipping") only from warnings up.
const DEFAULT_LOG: &str = "info,tokio_postgres=warn";

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Like [`init_tracing`], writing to `file` (no colours).
pub(crate) fn init_tracing_to(file: std::fs::File) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
}

/// Starts the step spawner of a worker this process will run (its helpers become
/// `run_as` at their start).
fn start_spawner(run_as: Option<&rota_worker::RunAs>) -> Result<rota_worker::Spawner> {
    let arg = std::ffi::OsStr::new(rota_worker::spawner::HELPER_ARG);
    let env = run_as.map(rota_worker::RunAs::helper_env);
    let envs: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let spawner = rota_worker::Spawner::start(&[arg], &envs)?;
    // Test-only (feature `test-hooks`): the worker KILLs itself right after a spawn is
    // answered (crates/cli/tests prove no step survives that).
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("ROTA_TEST_KILL_AFTER_SPAWN").is_some() {
        spawner.test_kill_after_spawn();
    }
    Ok(spawner)
}
