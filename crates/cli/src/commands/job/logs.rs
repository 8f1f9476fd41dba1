//! `rota job logs ID`: the job's output written to stdout exactly as stored (byte for
//! byte, nothing added), paging through `after` cursors. Which step and attempt a stretch
//! of output came from goes to stderr as `==> step S (attempt N) <==`, only when stderr is a
//! terminal or with `--headers`, so `rota job logs ID > out` captures the raw bytes.
//! `-f` long-polls until the job has ended and every chunk has been returned.

use super::Api;
use crate::args::LogsArgs;
use crate::output::{Out, note, size_text};
use anyhow::Result;
use rota_api_types::jobs::{JobDetail, LogsQuery, Truncation};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How long one follow request may wait for new output (the server caps it at 30 s).
const FOLLOW_WAIT_MS: u64 = 20_000;

pub(crate) async fn run(api: &Api, args: &LogsArgs) -> Result<ExitCode> {
    let id = args.id;
    // Fetching the job first turns a wrong id into "no job <id>" and tells us whether the
    // output spans several steps or attempts.
    let job = api.client.get_job(id).await.map_err(|e| api.error(e, Some(id)))?;
    if let Some(step) = &args.step
        && !job.step_details.iter().any(|s| &s.name == step)
    {
        return Err(crate::failure::usage(format!("--step {step}: job {id} has no step named '{step}'")));
    }
    let headers = args.headers || std::io::stderr().is_terminal();
    // Following a job that has not ended, more steps or attempts may come: announce the
    // first stretch too, or it would be the one without a header.
    let still_running = args.follow && !is_finished(&job);
    let mut printed_header = headers && (still_running || spans_several(&job, args.step.as_deref()));

    let mut out = Out::new();
    let mut after = 0;
    let mut first = true;
    let mut current: Option<(String, u32)> = None;
    let mut reported_cuts = HashSet::new();
    loop {
        // The first page of `--tail` starts where the server says the tail does.
        let tail = args.tail.filter(|_| first);
        first = false;
        let query = LogsQuery {
            step: args.step.clone(),
            after: if tail.is_some() { None } else { Some(after) },
            wait_ms: args.follow.then_some(FOLLOW_WAIT_MS),
            max_bytes: None,
            tail_bytes: tail,
        };
        let page = api.client.job_logs(id, &query).await.map_err(|e| api.error(e, Some(id)))?;
        for chunk in &page.chunks {
            let source = (chunk.step.clone(), chunk.attempt);
            if current.as_ref() != Some(&source) {
                // Only announce the first stretch if there will be others; announce every
                // change after that.
                if headers && (printed_header || current.is_some()) {
                    out.flush()?;
                    note(format_args!("==> step {} (attempt {}) <==", chunk.step, chunk.attempt));
                    printed_header = true;
                }
                current = Some(source);
            }
            out.write_all(&chunk.data.0)?;
        }
        out.flush()?;
        // Following a running step, its cut may still grow: say it once it is final.
        if !args.follow || page.done {
            for cut in &page.truncated {
                if reported_cuts.insert((cut.step.clone(), cut.attempt_id)) {
                    report_cut(cut);
                }
            }
        }
        let advanced = page.next_cursor != after;
        after = page.next_cursor;
        if page.done || (!args.follow && page.chunks.is_empty()) {
            break;
        }
        if args.follow && !advanced {
            // The server answered without waiting (or has nothing yet): do not spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What was not kept of an attempt's output, one line per cause, exact to the byte.
fn report_cut(cut: &Truncation) {
    let who = format!("rota: step {} (attempt id {})", cut.step, cut.attempt_id);
    let bytes = |n: u64| format!("{n} bytes ({})", size_text(n));
    if cut.cut_bytes > 0 {
        note(format_args!("{who}: the first {} of output were cut by the log cap", bytes(cut.cut_bytes)));
    }
    if cut.quota_refused_bytes > 0 {
        note(format_args!(
            "{who}: {} of output were not stored: the server's log quota was full",
            bytes(cut.quota_refused_bytes)
        ));
    }
    if cut.quota_pruned_bytes > 0 {
        note(format_args!(
            "{who}: {} of output were deleted after the job finished, to keep the server's log quota",
            bytes(cut.quota_pruned_bytes)
        ));
    }
}

/// Whether the job is in a terminal state (no more output can come).
fn is_finished(job: &JobDetail) -> bool {
    job.summary.state.parse::<rota_domain::JobState>().is_ok_and(rota_domain::JobState::is_terminal)
}

/// Whether the output (of `step`, if given) comes from more than one step or attempt.
fn spans_several(job: &JobDetail, step: Option<&str>) -> bool {
    let attempts: usize =
        job.step_details.iter().filter(|s| step.is_none_or(|n| n == s.name)).map(|s| s.attempts.len()).sum();
    attempts > 1
}
