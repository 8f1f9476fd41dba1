//! One module per command. Each takes its validated settings and returns the exit code;
//! errors bubble up to `main` as `anyhow::Error` (wrapped in `Failure` when they must not
//! exit 1).

mod completions;
mod dev;
pub(crate) mod fleet;
pub(crate) mod job;
mod migrate;
mod resources;
mod routing;
mod server;
mod server_bg;
pub(crate) mod worker;
mod worker_run;

use crate::args::{Cli, Command, RoutingCommand, ServerCmd, WorkerArgs, WorkerCommand};
use crate::config::Paths;
use anyhow::{Context, Result};
use std::process::ExitCode;

/// Runs the parsed command line. The background-worker commands run without an async
/// runtime (the supervisor builds its own, single-threaded one).
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Completions { shell } => completions::run(shell),
        Command::Worker(args) => match *args {
            WorkerArgs { command: Some(WorkerCommand::Supervise(args)), .. } => {
                crate::lifecycle::supervisor::run(&args)
            }
            WorkerArgs { command: Some(WorkerCommand::Run(run_args)), .. }
            | WorkerArgs { command: None, run: run_args } => run_async(Cli {
                global: cli.global,
                command: Command::Worker(Box::new(WorkerArgs { command: None, run: run_args })),
            }),
            WorkerArgs { command: Some(WorkerCommand::Fleet(fleet)), run } => run_async(Cli {
                global: cli.global,
                command: Command::Worker(Box::new(WorkerArgs {
                    command: Some(WorkerCommand::Fleet(fleet)),
                    run,
                })),
            }),
            WorkerArgs { command: Some(command), .. } => {
                worker::run(&cli.global, command, &Paths::from_env()?)
            }
        },
        Command::Server(args) if args.command.is_some() => match *args {
            ServerCmd { command: Some(command), .. } => {
                server_bg::run(&cli.global, command, &Paths::from_env()?)
            }
            ServerCmd { command: None, run } => run_async(Cli {
                global: cli.global,
                command: Command::Server(Box::new(ServerCmd { command: None, run })),
            }),
        },
        command => run_async(Cli { global: cli.global, command }),
    }
}

fn run_async(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::from_env()?;
    // A worker's step spawner starts here, from the main thread, before the runtime: it is
    // re-executed (never forked after tokio) and dies with the thread that started it.
    let runs_worker = match &cli.command {
        Command::Dev(_) => true,
        Command::Worker(args) => matches!(
            **args,
            WorkerArgs { command: Some(WorkerCommand::Run(_)), .. } | WorkerArgs { command: None, .. }
        ),
        _ => false,
    };
    let spawner = if runs_worker { Some(start_spawner()?) } else { None };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => match *args {
                ServerCmd { command: None, run } => server::run(&run, &paths).await,
                ServerCmd { command: Some(command), .. } => server_bg::run(&cli.global, command, &paths),
            },
            Command::Dev(args) => dev::run(&args, &paths, spawner).await,
            Command::Worker(args) => match *args {
                WorkerArgs { command: Some(WorkerCommand::Run(run_args)), .. }
                | WorkerArgs { command: None, run: run_args } => {
                    worker_run::run(&cli.global, &run_args, &paths, spawner).await
                }
                WorkerArgs { command: Some(WorkerCommand::Fleet(fleet)), .. } => {
                    fleet::run(&cli.global, *fleet, &paths).await
                }
                WorkerArgs { command: Some(other), .. } => worker::run(&cli.global, other, &paths),
            },
            Command::Routing { command: RoutingCommand::Dump { sample } } => {
                let loaded = crate::routing::load_active()?;
                routing::dump(&loaded, cli.global.json, sample)
            }
            Command::Job { command } => job::run(&cli.global, command, &paths).await,
            Command::Migrate(args) => migrate::run(&args).await,
            Command::Apply(args) => resources::apply(&cli.global, &args, &paths).await,
            Command::Diff(args) => resources::diff(&cli.global, &args, &paths).await,
            Command::Get(args) => resources::get(&cli.global, &args, &paths).await,
            Command::Delete(args) => resources::delete(&cli.global, &args, &paths).await,
            Command::Run(args) => resources::run(&cli.global, &args, &paths).await,
            Command::Completions { shell } => completions::run(shell),
        }
    })
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

/// Starts the step spawner of a worker this process will run.
fn start_spawner() -> Result<rota_worker::Spawner> {
    let arg = std::ffi::OsStr::new(rota_worker::spawner::HELPER_ARG);
    let spawner = rota_worker::Spawner::start(&[arg], &[])?;
    // Test-only (feature `test-hooks`): the worker KILLs itself right after a spawn is
    // answered (crates/cli/tests prove no step survives that).
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("ROTA_TEST_KILL_AFTER_SPAWN").is_some() {
        spawner.test_kill_after_spawn();
    }
    Ok(spawner)
}
