//! `job_logs`: the end of a job's output (one step's, or every step's) as text, each
//! stretch headed by `==> step S (attempt N) <==` as `rota job logs --headers` writes it.
//! Reads what is stored now (no following); only the last `tail_bytes` are kept in memory.

use super::inputs::{self, JobLogs};
use super::tools::failed;
use crate::commands::job::Api;
use rmcp::model::{CallToolResult, ContentBlock};
use rota_api_types::jobs::LogsQuery;
use std::collections::VecDeque;

/// One stretch of output from one step's attempt.
struct Stretch {
    step: String,
    attempt: u32,
    bytes: Vec<u8>,
}

pub(super) async fn tail(api: &Api, input: &JobLogs) -> CallToolResult {
    let id = match inputs::job_id("id", &input.id) {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    let keep = match input.tail_bytes() {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    // The job first: a wrong id reads "no job <id>", a wrong step names the steps there are.
    let job = match api.client.get_job(id).await {
        Ok(j) => j,
        Err(e) => return failed(format!("{:#}", api.error(e, Some(id)))),
    };
    if let Some(step) = &input.step
        && !job.step_details.iter().any(|s| &s.name == step)
    {
        let names: Vec<&str> = job.step_details.iter().map(|s| s.name.as_str()).collect();
        return failed(format!(
            "step: job {id} has no step named '{step}' (its steps: {})",
            names.join(", ")
        ));
    }
    let mut stretches: VecDeque<Stretch> = VecDeque::new();
    let (mut kept, mut total) = (0usize, 0u64);
    // From the start; once the first page shows the output is longer than the tail kept,
    // the next read starts at the tail (the server finds it) instead of reading it all.
    let mut after: Option<i64> = Some(0);
    let mut skipped = false;
    loop {
        let query = LogsQuery {
            step: input.step.clone(),
            after,
            tail_bytes: after.is_none().then_some(keep as u64),
            ..LogsQuery::default()
        };
        let page = match api.client.job_logs(id, &query).await {
            Ok(p) => p,
            Err(e) => return failed(format!("{:#}", api.error(e, Some(id)))),
        };
        let tail_read = after.is_none();
        for chunk in page.chunks {
            let data = chunk.data.0;
            total += data.len() as u64;
            kept += data.len();
            match stretches.back_mut() {
                Some(s) if s.step == chunk.step && s.attempt == chunk.attempt => {
                    s.bytes.extend_from_slice(&data)
                }
                _ => stretches.push_back(Stretch { step: chunk.step, attempt: chunk.attempt, bytes: data }),
            }
            // Drop what falls out of the tail, oldest first.
            while kept > keep {
                let Some(first) = stretches.front_mut() else { break };
                let over = kept - keep;
                if first.bytes.len() <= over {
                    kept -= first.bytes.len();
                    stretches.pop_front();
                } else {
                    first.bytes.drain(..over);
                    kept -= over;
                }
            }
        }
        let advanced = Some(page.next_cursor) != after;
        after = Some(page.next_cursor);
        if page.done || !advanced || tail_read {
            break;
        }
        if !skipped && kept >= keep {
            // Longer than the tail: jump to it (what was read so far is dropped).
            skipped = true;
            stretches.clear();
            kept = 0;
            after = None;
        }
    }
    let mut text = format!(
        "job {id} ({}): {} of its output{}\n",
        job.summary.state,
        if (kept as u64) < total || skipped {
            format!("the last {kept} bytes")
        } else {
            format!("all {total} bytes")
        },
        input.step.as_deref().map(|s| format!(" of step {s}")).unwrap_or_default()
    );
    for s in &stretches {
        text.push_str(&format!("==> step {} (attempt {}) <==\n", s.step, s.attempt));
        text.push_str(&String::from_utf8_lossy(&s.bytes));
        if !s.bytes.ends_with(b"\n") {
            text.push('\n');
        }
    }
    CallToolResult::success(vec![ContentBlock::text(text)])
}
