//! `rota worker ping|inspect|stats|revoke|shutdown|pause|resume`: fleet control from one
//! command. Commands reach busy workers through their control long-polls (the server fans
//! them out); replies are collected until `--timeout` and workers that did not answer are
//! always listed, never dropped. Each verb has `--json` with a documented shape.

mod forget;
mod inspect;
pub(crate) mod list;
mod ping;
mod queues;
mod revoke;
mod shutdown;
mod stats;

use crate::args::GlobalArgs;
pub(crate) use crate::args::{FleetCmd, InspectArgs, RevokeArgs, ShutdownArgs, Target};
use crate::commands::job::Api;
use crate::config::Paths;
use anyhow::Result;
use rota_api_types::fleet::{FleetCommand, FleetRequest, FleetResponse};
use std::process::ExitCode;

pub(crate) async fn run(global: &GlobalArgs, cmd: FleetCmd, paths: &Paths) -> Result<ExitCode> {
    let api = Api::connect(global, paths)?;
    let json = global.json;
    match cmd {
        FleetCmd::Ping(t) => ping::run(&api, &t, json).await,
        FleetCmd::Inspect(a) => inspect::run(&api, &a, json).await,
        FleetCmd::Stats(t) => stats::run(&api, &t, json).await,
        FleetCmd::Revoke(a) => revoke::run(&api, &a, json).await,
        FleetCmd::Shutdown(a) => shutdown::run(&api, &a, json).await,
        FleetCmd::Pause(q) => queues::run(&api, &q.queue, true, json).await,
        FleetCmd::Resume(q) => queues::run(&api, &q.queue, false, json).await,
        FleetCmd::List => list::run(&api, json).await,
        FleetCmd::Forget(a) => forget::forget(&api, &a, json).await,
        FleetCmd::Unblock(a) => forget::unblock(&api, &a.name, json).await,
    }
}

/// Sends `command` to the targeted workers and returns what came back.
pub(crate) async fn ask(api: &Api, command: FleetCommand, target: &Target) -> Result<FleetResponse> {
    let req = FleetRequest {
        command,
        workers: target.workers.clone(),
        timeout_ms: Some(u64::try_from(target.timeout.as_millis()).unwrap_or(u64::MAX)),
        mode: None,
    };
    api.client.fleet(&req).await.map_err(|e| api.error(e, None))
}

/// Exit 0 when every asked worker answered, 1 when some did not (or none was live).
pub(crate) fn exit_for(resp: &FleetResponse) -> ExitCode {
    if resp.no_reply.is_empty() && !resp.replies.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The "did not answer" lines every table ends with.
pub(crate) fn write_silent(out: &mut crate::output::Out, resp: &FleetResponse) -> Result<()> {
    if resp.replies.is_empty() && resp.no_reply.is_empty() {
        writeln!(out, "no live worker")?;
    }
    for n in &resp.no_reply {
        writeln!(out, "{}: did not answer ({})", n.worker, n.why)?;
    }
    Ok(())
}
