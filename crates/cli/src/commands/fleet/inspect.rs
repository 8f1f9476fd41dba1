//! `rota worker inspect [--revoked]`: steps in flight per worker.
//!
//! JSON: `{"workers": [{"worker", "host", "inFlight": [{"jobId", "step", "attempt",
//! "attemptId", "pid", "runningMs", "queue"}], "revoked": [JOB]}], "noReply": [...]}`
//! (`revoked` only with `--revoked`).

use super::{InspectArgs, ask, exit_for, write_silent};
use crate::commands::job::Api;
use crate::output::{Out, table};
use anyhow::Result;
use rota_api_types::fleet::FleetCommand;
use rota_api_types::worker::Reply;
use serde_json::json;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, args: &InspectArgs, json: bool) -> Result<ExitCode> {
    let resp = ask(api, FleetCommand::Inspect, &args.target).await?;
    let mut out = Out::new();
    let mut workers = Vec::new();
    for r in &resp.replies {
        let (in_flight, revoked) = match &r.reply {
            Reply::Inspect { in_flight, revoked } => (in_flight.clone(), revoked.clone()),
            Reply::Error { message } => {
                anyhow::bail!("worker {} could not answer inspect: {message}", r.worker)
            }
            other => anyhow::bail!("worker {} answered inspect with {other:?}", r.worker),
        };
        workers.push((r, in_flight, revoked));
    }
    if json {
        let ws: Vec<_> = workers
            .iter()
            .map(|(r, f, rv)| {
                let mut v = json!({"worker": r.worker, "host": r.host, "inFlight": f});
                if args.revoked {
                    v["revoked"] = json!(rv);
                }
                v
            })
            .collect();
        out.json(&json!({"workers": ws, "noReply": resp.no_reply}))?;
    } else {
        for (r, in_flight, revoked) in &workers {
            writeln!(out, "{} ({}): {} in flight", r.worker, r.host, in_flight.len())?;
            if !in_flight.is_empty() {
                let mut t = table(&["JOB", "STEP", "ATTEMPT", "PID", "RUNNING", "QUEUE"]);
                for f in in_flight {
                    t.add_row(vec![
                        f.job_id.to_string(),
                        f.step.clone(),
                        f.attempt.to_string(),
                        f.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        format!("{:.1}s", f.running_ms as f64 / 1000.0),
                        f.queue.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                out.table(&t)?;
            }
            if args.revoked {
                writeln!(
                    out,
                    "  revoked: {}",
                    if revoked.is_empty() {
                        "-".to_string()
                    } else {
                        revoked.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                )?;
            }
        }
        write_silent(&mut out, &resp)?;
    }
    out.flush()?;
    Ok(exit_for(&resp))
}
