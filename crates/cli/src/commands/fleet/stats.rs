//! `rota worker stats`: per worker concurrency (configured max and active), in flight,
//! totals, uptime, RSS; then queue depth and paused state from the server.
//!
//! JSON: `{"workers": [{"worker", "host", "maxConcurrency", "minConcurrency",
//! "activeConcurrency", "inFlight", "processed", "succeeded", "failed", "uptimeS",
//! "rssBytes", "queues"}], "queues": [{"queue", "ready", "running", "paused"}],
//! "noReply": [...]}`.

use super::{Target, ask, exit_for, write_silent};
use crate::commands::job::Api;
use crate::output::{Out, table};
use anyhow::Result;
use rota_api_types::fleet::FleetCommand;
use rota_api_types::worker::Reply;
use serde_json::json;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, target: &Target, json: bool) -> Result<ExitCode> {
    let resp = ask(api, FleetCommand::Stats, target).await?;
    let queues = api.client.list_queues().await.map_err(|e| api.error(e, None))?.queues;
    let mut rows = Vec::new();
    for r in &resp.replies {
        match &r.reply {
            Reply::Stats(s) => rows.push((r, s.clone())),
            Reply::Error { message } => {
                anyhow::bail!("worker {} could not answer stats: {message}", r.worker)
            }
            other => anyhow::bail!("worker {} answered stats with {other:?}", r.worker),
        }
    }
    let mut out = Out::new();
    if json {
        let ws: Vec<_> = rows
            .iter()
            .map(|(r, s)| {
                let mut v = json!(s);
                v["worker"] = json!(r.worker);
                v["host"] = json!(r.host);
                v
            })
            .collect();
        out.json(&json!({"workers": ws, "queues": queues, "noReply": resp.no_reply}))?;
    } else {
        if !rows.is_empty() {
            let mut t = table(&[
                "WORKER",
                "CONCURRENCY",
                "IN FLIGHT",
                "PROCESSED",
                "OK",
                "FAILED",
                "UPTIME",
                "RSS",
                "QUEUES",
                "POOL",
            ]);
            for (r, s) in &rows {
                let conc = if s.min_concurrency == s.max_concurrency {
                    format!("{}", s.active_concurrency)
                } else {
                    format!("{} ({}..{})", s.active_concurrency, s.min_concurrency, s.max_concurrency)
                };
                t.add_row(vec![
                    r.worker.clone(),
                    conc,
                    s.in_flight.to_string(),
                    s.processed.to_string(),
                    s.succeeded.to_string(),
                    s.failed.to_string(),
                    format!("{:.0}s", s.uptime_s),
                    format!("{:.1} MiB", s.rss_bytes as f64 / (1 << 20) as f64),
                    s.queues.join(","),
                    match (&s.pool, s.pool_generation) {
                        (Some(p), Some(g)) => format!("{p} (generation {g})"),
                        (Some(p), None) => p.clone(),
                        _ => "-".into(),
                    },
                ]);
            }
            out.table(&t)?;
            for (r, s) in &rows {
                if let Some(why) = &s.degraded {
                    writeln!(out, "{}: takes no work: {why}", r.worker)?;
                }
            }
        }
        write_silent(&mut out, &resp)?;
        if !queues.is_empty() {
            let mut t = table(&["QUEUE", "READY", "RUNNING", "PAUSED"]);
            for q in &queues {
                t.add_row(vec![
                    q.queue.clone(),
                    q.ready.to_string(),
                    q.running.to_string(),
                    q.paused.to_string(),
                ]);
            }
            out.table(&t)?;
        }
    }
    out.flush()?;
    Ok(exit_for(&resp))
}
