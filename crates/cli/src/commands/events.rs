//! `rota events [-f] [--json]`: prints the control plane's event stream, one line per event
//! (NDJSON with `--json`). With `-f` it reconnects where it left off (`Last-Event-ID`) when
//! the server ends a stream, and after a lost connection with the one backoff.

use crate::args::{EventsArgs, GlobalArgs};
use crate::commands::job::Api;
use crate::config::Paths;
use crate::output::{Out, note};
use anyhow::Result;
use rota_api_types::events::{EventsQuery, StreamEvent};
use rota_worker::backoff::Backoff;
use std::process::ExitCode;

pub(crate) async fn run(global: &GlobalArgs, args: &EventsArgs, paths: &Paths) -> Result<ExitCode> {
    let api = Api::connect(global, paths)?;
    let query = EventsQuery {
        follow: Some(args.follow),
        job: args.job,
        worker: args.worker.clone(),
        kind: (!args.kind.is_empty()).then(|| args.kind.join(",")),
        last_event_id: None,
    };
    let mut out = Out::new();
    let mut last: Option<String> = None;
    let mut backoff = Backoff::server();
    loop {
        let mut stream = match api.client.events(&query, last.as_deref()).await {
            Ok(s) => s,
            // Only a followed stream outlives a lost server; a refusal (401, 400) never heals.
            Err(e) if args.follow && e.is_unreachable() => {
                let wait = backoff.next_delay();
                note(format!("events: {e}; connecting again in {wait:?}"));
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => return Err(api.error(e, args.job)),
        };
        backoff.reset();
        loop {
            match stream.next().await {
                Ok(Some(e)) => print(&mut out, &e, global.json)?,
                Ok(None) => break,
                Err(e) if args.follow => {
                    note(format!("events: {e}"));
                    break;
                }
                Err(e) => return Err(api.error(e, args.job)),
            }
        }
        last = stream.last_id().map(str::to_string).or(last);
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print(out: &mut Out, e: &StreamEvent, json: bool) -> Result<()> {
    if json {
        let line = serde_json::to_string(e)?;
        writeln!(out, "{line}")?;
        return out.flush();
    }
    let mut what = Vec::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            what.push(format!("{k}={v}"));
        }
    };
    put("namespace", e.namespace.clone());
    put("job", e.job.map(|j| j.to_string()));
    put("step", e.step.clone());
    put("attempt", e.attempt.map(|a| a.0.to_string()));
    put("worker", e.worker.clone());
    put("resource", e.resource.clone());
    put("name", e.name.clone());
    put("host", e.host.clone());
    put("state", e.state.clone());
    put("detail", e.detail.clone());
    writeln!(out, "{} {:<10} {}", e.at.format("%H:%M:%S%.3f"), e.kind, what.join(" "))?;
    out.flush()
}
