//! `rota worker list`: the fleet as the server sees it, of the namespace (or every one):
//! workers (state, heartbeat age, concurrency, steps held) and the supervisors of
//! background workers (their state and last error, from their last report).
//!
//! JSON: `{"workers": [WorkerView...], "supervisors": [SupervisorView...]}`.

use crate::commands::job::Api;
use crate::output::{self, Out};
use anyhow::Result;
use rota_api_types::supervisors::SupervisorView;
use rota_api_types::workers::WorkerView;
use serde::Serialize;
use std::process::ExitCode;

/// The fleet: workers and the supervisors of background workers.
#[derive(Serialize)]
pub(crate) struct Listing {
    pub(crate) workers: Vec<WorkerView>,
    pub(crate) supervisors: Vec<SupervisorView>,
}

/// The fleet as the server sees it (also `rota mcp`'s `list_workers`).
pub(crate) async fn fetch(api: &Api) -> Result<Listing> {
    let workers = api.client.list_workers().await.map_err(|e| api.error(e, None))?.workers;
    let supervisors = api.client.list_supervisors().await.map_err(|e| api.error(e, None))?.supervisors;
    Ok(Listing { workers, supervisors })
}

pub(crate) async fn run(api: &Api, json: bool) -> Result<ExitCode> {
    let listing = fetch(api).await?;
    let mut out = Out::new();
    if json {
        out.json(&listing)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let Listing { workers, supervisors } = listing;
    let now = chrono::Utc::now();
    if workers.is_empty() {
        writeln!(out, "no workers")?;
    } else {
        let mut t = output::table(&[
            "NAMESPACE",
            "NAME",
            "HOST",
            "STATE",
            "HEARTBEAT",
            "CONCURRENCY",
            "RUNNING",
            "QUEUES",
        ]);
        for w in &workers {
            t.add_row(vec![
                w.namespace.clone(),
                w.name.clone(),
                w.host.clone(),
                format!("{:?}", w.state).to_lowercase(),
                format!("{} ago", output::span(w.last_heartbeat_at, now)),
                w.concurrency.to_string(),
                w.running.to_string(),
                w.queues.join(","),
            ]);
        }
        out.table(&t)?;
    }
    if !supervisors.is_empty() {
        writeln!(out)?;
        let mut t = output::table(&[
            "HOST",
            "INSTANCE",
            "WORKER",
            "SUPERVISOR",
            "REPORTED",
            "RESTARTS",
            "LAST ERROR",
        ]);
        for s in &supervisors {
            let r = &s.report;
            let state =
                if s.stale { format!("{} (stale)", r.state.as_str()) } else { r.state.as_str().to_string() };
            t.add_row(vec![
                r.host.clone(),
                r.key.clone(),
                output::or_dash(r.worker.as_deref()).to_string(),
                state,
                format!("{:.1}s ago", s.report_age_ms as f64 / 1000.0),
                r.restarts.to_string(),
                output::or_dash(r.last_error.as_deref()).chars().take(120).collect(),
            ]);
        }
        out.table(&t)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
