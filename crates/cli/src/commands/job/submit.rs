//! `rota job submit`: build the job from a document, flags and argv (see `job_flags`),
//! validate it here so mistakes exit 2 before any network call, submit (always with an
//! idempotency key: the user's or one of our own), print the id.
//! `--wait` then follows the job to its end: exit 0 if it succeeded, 1 otherwise.

use super::Api;
use crate::args::SubmitArgs;
use crate::job_flags;
use crate::output::{Out, note, or_dash};
use anyhow::Result;
use rota_api_types::jobs::SubmitResponse;
use rota_domain::{JobId, JobState};
use std::process::ExitCode;
use std::time::Duration;

pub(crate) async fn run(api: &Api, args: &SubmitArgs, json: bool) -> Result<ExitCode> {
    let submitted = send(api, args).await?;
    let mut out = Out::new();
    if json {
        out.json(&submitted)?;
    } else if submitted.created {
        writeln!(out, "submitted {}", submitted.id)?;
    } else {
        writeln!(out, "submitted {} (already known by its idempotency key)", submitted.id)?;
    }
    out.flush()?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait(api, submitted.id).await
}

/// Builds the job `args` describe, routes it and submits it: the one path of `rota job
/// submit` (and of `rota mcp`'s `submit_job`, which fills in the same arguments).
pub(crate) async fn send(api: &Api, args: &SubmitArgs) -> Result<SubmitResponse> {
    let mut spec = job_flags::build(args, chrono::Utc::now())?;
    // Routing: explicit --queue, else a route by job name, else the document; then aliases.
    let routing = crate::routing::load_active()?;
    spec.queue = routing
        .routing
        .queue_for(args.queue.as_deref(), spec.name.as_deref(), &spec.queue)
        .map_err(|e| crate::failure::usage(format!("routing: {e:#}")))?;
    let (key, own_key) = submit_key(spec.idempotency_key.as_deref());
    let mut submitted = api.client.submit(&spec, Some(&key)).await.map_err(|e| api.error(e, None))?;
    if own_key {
        // Our own fresh key can only match the job this very command created: a submit
        // that reached one server, lost its answer and was sent again to another.
        submitted.created = true;
    }
    Ok(submitted)
}

/// The submit's idempotency key: the user's (`--idempotency-key` or the document's), else a
/// fresh UUID v7 of our own, so that a submit the client sends again to another server
/// (its first answer lost) never creates a second job. True when the key is our own.
pub(crate) fn submit_key(given: Option<&str>) -> (String, bool) {
    match given {
        Some(k) => (k.to_string(), false),
        None => (uuid::Uuid::now_v7().to_string(), true),
    }
}

/// Polls until the job is terminal, starting fast (short jobs are the common case in
/// scripts) and backing off to one poll a second.
pub(crate) async fn wait(api: &Api, id: JobId) -> Result<ExitCode> {
    let mut delay = Duration::from_millis(50);
    loop {
        let job = api.client.get_job(id).await.map_err(|e| api.error(e, Some(id)))?;
        let s = &job.summary;
        if s.state.parse::<JobState>().is_ok_and(JobState::is_terminal) {
            note(format_args!("job {id} {}: {}", s.state, or_dash(s.reason.as_deref())));
            let ok = s.state == JobState::Succeeded.as_str();
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_key_wins_else_a_fresh_v7() {
        assert_eq!(submit_key(Some("nightly-42")), ("nightly-42".to_string(), false));
        let (a, own) = submit_key(None);
        assert!(own);
        let (b, _) = submit_key(None);
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7);
        assert!(a.len() <= rota_domain::limits::MAX_IDEMPOTENCY_KEY);
    }
}
