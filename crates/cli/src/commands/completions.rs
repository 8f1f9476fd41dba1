//! `rota completions SHELL`: the completion script clap_complete generates from the same
//! definitions the parser uses, so it never drifts from the real flags.

use crate::args::Cli;
use crate::output::Out;
use anyhow::Result;
use clap::CommandFactory;
use std::process::ExitCode;

pub(crate) fn run(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rota", &mut script);
    let mut out = Out::new();
    out.write_all(&script)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
