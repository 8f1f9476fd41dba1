//! `rota worker shutdown (--worker N... | --all) [--mode warm|soft|hard]`: a background
//! worker shut down this way is not restarted by its supervisor.
//!
//! JSON: `{"replies": [{"worker", "host", "ok", "message"}], "noReply": [...]}`.

use super::{ShutdownArgs, exit_for, write_silent};
use crate::commands::job::Api;
use crate::output::Out;
use anyhow::Result;
use rota_api_types::fleet::{FleetCommand, FleetRequest};
use rota_api_types::worker::Reply;
use serde_json::json;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, args: &ShutdownArgs, json: bool) -> Result<ExitCode> {
    let req = FleetRequest {
        command: FleetCommand::Shutdown,
        workers: if args.all { Vec::new() } else { args.workers.clone() },
        timeout_ms: Some(u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX)),
        mode: Some(args.mode),
    };
    let resp = api.client.fleet(&req).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    let rows: Vec<_> = resp
        .replies
        .iter()
        .map(|r| match &r.reply {
            Reply::Error { message } => (r, false, message.clone()),
            _ => (r, true, format!("shutting down ({:?})", args.mode).to_lowercase()),
        })
        .collect();
    if json {
        let rs: Vec<_> = rows
            .iter()
            .map(|(r, ok, m)| json!({"worker": r.worker, "host": r.host, "ok": ok, "message": m}))
            .collect();
        out.json(&json!({"replies": rs, "noReply": resp.no_reply}))?;
    } else {
        for (r, _, m) in &rows {
            writeln!(out, "{}: {m}", r.worker)?;
        }
        write_silent(&mut out, &resp)?;
    }
    out.flush()?;
    if rows.iter().any(|(_, ok, _)| !ok) {
        return Ok(ExitCode::from(1));
    }
    Ok(exit_for(&resp))
}
