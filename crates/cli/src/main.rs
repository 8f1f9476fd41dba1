//! `rota`: the command line, and the only composition root of the workspace. It alone reads
//! environment variables, token files and signals, and wires the store, server, worker and
//! client crates together.
//!
//! # Layout
//! - `args`: raw clap definitions. `config`: validated settings and XDG paths.
//! - `commands/`: one file per command. `output`: stdout writes, tables, JSON.
//! - `tokens`: the admin and join token files. `signals`: SIGINT/SIGTERM to cancellation.
//! - `job_flags`: building a job from a document (`rota_manifest`), flags and argv.
//! - `lifecycle`: background workers (supervisor, files, locks, start/stop/status).
//! - `failure`: exit codes.

mod args;
mod commands;
mod config;
mod database;
mod failure;
mod job_flags;
mod log_quota;
mod output;
mod routing;
mod secret_key;
mod signals;
mod tokens;

use clap::error::ErrorKind;
use failure::StdoutClosed;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A worker's step spawner: re-executed from this binary before any runtime, it must
    // not parse flags, read config or start threads (`rota_worker::spawner`).
    if argv.get(1).is_some_and(|a| a == rota_worker::spawner::HELPER_ARG) {
        return ExitCode::from(u8::try_from(rota_worker::spawner::helper_main()).unwrap_or(1));
    }
    let cli = match parse(&argv) {
        Ok(cli) => cli,
        Err(err) => return exit_on_parse_error(&err, &argv),
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(err) => {
            let code = failure::exit_code(&err);
            let _ = writeln!(std::io::stderr(), "rota: {err:#}");
            ExitCode::from(code)
        }
    }
}

/// Parses argv, noting whether `--server` was given (flag or `ROTA_SERVER`) rather than
/// defaulted: `rota worker start` keeps a saved server unless one is given.
fn parse(argv: &[std::ffi::OsString]) -> Result<args::Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = args::Cli::command().try_get_matches_from(argv)?;
    let mut cli = args::Cli::from_arg_matches(&matches)?;
    cli.global.server_given = server_given(&matches);
    Ok(cli)
}

fn server_given(m: &clap::ArgMatches) -> bool {
    use clap::parser::ValueSource;
    if m.value_source("server").is_some_and(|s| s != ValueSource::DefaultValue) {
        return true;
    }
    m.subcommand().is_some_and(|(_, sub)| server_given(sub))
}

/// Prints clap's message. Usage errors exit 2, except for `rota worker [run]`, whose bad
/// flags are bad configuration (78) so that a supervisor never restarts it for them. A
/// mistyped subcommand (`rota worker lsit`) is a usage error even there: no supervisor runs
/// a word that is not a subcommand.
fn exit_on_parse_error(err: &clap::Error, argv: &[std::ffi::OsString]) -> ExitCode {
    let _ = err.print();
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::InvalidSubcommand => {
            ExitCode::from(failure::EXIT_USAGE)
        }
        _ if is_worker_run(argv) => ExitCode::from(failure::EXIT_CONFIG),
        _ => ExitCode::from(failure::EXIT_USAGE),
    }
}

/// Whether argv names `rota worker` or `rota worker run` (global flags may come first).
fn is_worker_run(argv: &[std::ffi::OsString]) -> bool {
    let words: Vec<&str> = argv.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let mut i = 0;
    while i < words.len() && words[i].starts_with('-') {
        // Global flags that take a separate value.
        i += if matches!(words[i], "--server" | "--token") { 2 } else { 1 };
    }
    if words.get(i) != Some(&"worker") {
        return false;
    }
    match words[i + 1..].iter().find(|w| !w.starts_with('-')) {
        None | Some(&"run") => true,
        // A flag's value (`rota worker --queue q`) or a future subcommand: only `run` and
        // the bare form are the worker itself.
        Some(w) => !is_worker_subcommand(w),
    }
}

fn is_worker_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    let cli = args::Cli::command();
    cli.find_subcommand("worker").is_some_and(|w| w.find_subcommand(word).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn worker_run_detection() {
        assert!(is_worker_run(&argv("rota worker --bogus")));
        assert!(is_worker_run(&argv("rota --server x worker run --bogus")));
        assert!(is_worker_run(&argv("rota worker --queue q --bogus")));
        assert!(!is_worker_run(&argv("rota job submit --bogus")));
        assert!(!is_worker_run(&argv("rota --bogus")));
    }
}
