//! `rota job show ID`: the job's summary, then one row per attempt of each step (worker,
//! status, exit code, duration, reason); a step that never ran gets one row of its own.

use super::Api;
use crate::output::{self, Out, or_dash};
use anyhow::Result;
use chrono::Utc;
use rota_api_types::jobs::JobDetail;
use rota_domain::JobId;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, id: JobId, json: bool) -> Result<ExitCode> {
    let job = api.client.get_job(id).await.map_err(|e| api.error(e, Some(id)))?;
    let mut out = Out::new();
    if json {
        out.json(&job)?;
    } else {
        render(&mut out, &job)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn render(out: &mut Out, job: &JobDetail) -> Result<()> {
    let s = &job.summary;
    let now = Utc::now();
    writeln!(out, "id:        {}", s.id)?;
    writeln!(out, "name:      {}", or_dash(s.name.as_deref()))?;
    writeln!(out, "queue:     {} (priority {})", s.queue, s.priority)?;
    match &s.reason {
        Some(r) => writeln!(out, "state:     {} ({r})", s.state)?,
        None => writeln!(out, "state:     {}", s.state)?,
    }
    writeln!(out, "steps:     {}/{} succeeded", s.steps.succeeded, s.steps.total)?;
    if let Some(host) = &job.spec.target.host {
        writeln!(out, "on:        {host}")?;
    }
    if !job.spec.target.tags.is_empty() {
        writeln!(out, "tags:      {}", job.spec.target.tags.join(","))?;
    }
    if let Some(d) = job.spec.deadline {
        writeln!(out, "deadline:  {}", d.to_rfc3339())?;
    }
    writeln!(out, "created:   {} ({} ago)", s.created_at.to_rfc3339(), output::age(s.created_at, now))?;
    if let Some(f) = s.finished_at {
        writeln!(out, "finished:  {} (took {})", f.to_rfc3339(), output::span(s.created_at, f))?;
    }
    writeln!(out)?;

    let mut t =
        output::table(&["STEP", "STATE", "ATTEMPT", "WORKER", "STATUS", "EXIT", "DURATION", "REASON"]);
    for step in &job.step_details {
        let needs = job.spec.steps.iter().find(|x| x.name == step.name).map(|x| x.needs.join(","));
        let step_reason = match (step.reason.as_deref(), needs.as_deref()) {
            (Some(r), _) => r.to_string(),
            (None, Some(n)) if !n.is_empty() && step.attempts.is_empty() => format!("needs {n}"),
            _ => "-".to_string(),
        };
        if step.attempts.is_empty() {
            t.add_row(vec![&step.name, step.state.as_str(), "-", "-", "-", "-", "-", &step_reason]);
            continue;
        }
        for (i, a) in step.attempts.iter().enumerate() {
            let first = i == 0;
            let duration = output::span(a.started_at, a.finished_at.unwrap_or(now));
            let reason = match (a.reason.as_deref(), i + 1 == step.attempts.len()) {
                (Some(r), _) => r.to_string(),
                (None, true) => step_reason.clone(),
                (None, false) => "-".to_string(),
            };
            t.add_row(vec![
                if first { step.name.clone() } else { String::new() },
                if first { step.state.to_string() } else { String::new() },
                a.number.to_string(),
                a.worker.clone(),
                a.status.to_string(),
                a.exit_code.map_or_else(|| "-".to_string(), |c| c.to_string()),
                duration,
                reason,
            ]);
        }
    }
    out.table(&t)?;
    // What steps handed on through $ROTA_OUTPUT, as the steps that need them see it.
    let outputs: Vec<(&str, &std::collections::BTreeMap<String, String>)> = job
        .step_details
        .iter()
        .flat_map(|s| {
            s.attempts.iter().filter(|a| !a.outputs.is_empty()).map(move |a| (s.name.as_str(), &a.outputs))
        })
        .collect();
    if !outputs.is_empty() {
        writeln!(out)?;
        writeln!(out, "outputs:")?;
        for (step, values) in outputs {
            for (k, v) in values {
                writeln!(out, "  {}={v}", rota_domain::workflow::output_env(step, k))?;
            }
        }
    }
    Ok(())
}
