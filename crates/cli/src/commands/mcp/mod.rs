//! `rota mcp`: a Model Context Protocol server on stdin/stdout (the official `rmcp` SDK), so
//! an AI assistant can operate the fleet with this command line's server and admin token
//! (`--server`, `--token`/`ROTA_TOKEN`/the token file, `--namespace`). Stdout carries only
//! the protocol: logs go to stderr. The tools are `tools.rs`'s; they call the commands' code.

mod inputs;
mod logs;
mod progress;
mod tools;

use crate::args::GlobalArgs;
use crate::commands::job::Api;
use crate::config::Paths;
use anyhow::{Context, Result};
use rmcp::ServiceExt;
use std::process::ExitCode;

pub(crate) async fn run(global: &GlobalArgs, paths: &Paths) -> Result<ExitCode> {
    crate::commands::init_tracing();
    let api = Api::connect(global, paths)?;
    let service = tools::Rota::new(api)
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP: the session did not start")?;
    let reason = service.waiting().await.context("MCP: the server stopped abnormally")?;
    tracing::debug!("MCP session ended: {reason:?}");
    Ok(ExitCode::SUCCESS)
}
