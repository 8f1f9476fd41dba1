//! `rota worker pause|resume --queue Q`: persisted on the server; no worker claims from a
//! paused queue.
//!
//! JSON: `{"queue", "ready", "running", "paused"}`.

use crate::commands::job::Api;
use crate::output::Out;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, queue: &str, paused: bool, json: bool) -> Result<ExitCode> {
    let view = api.client.set_queue_paused(queue, paused).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if json {
        out.json(&view)?;
    } else {
        let verb = if view.paused { "paused" } else { "resumed" };
        writeln!(out, "queue {} {verb} ({} ready, {} running)", view.queue, view.ready, view.running)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
