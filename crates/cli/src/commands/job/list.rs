//! `rota job list`: jobs newest first, at most `--limit` (default 50), optionally filtered
//! by state (`unschedulable` = queued with no live worker able to take it) and queue.

use super::{Api, summary_table};
use crate::args::ListArgs;
use crate::failure::usage;
use crate::output::Out;
use anyhow::Result;
use rota_api_types::jobs::ListJobsQuery;
use rota_domain::JobState;
use std::process::ExitCode;

/// Not a stored state: derived by listings for queued jobs no live worker can take.
const UNSCHEDULABLE: &str = "unschedulable";

pub(crate) async fn run(api: &Api, args: &ListArgs, json: bool) -> Result<ExitCode> {
    let state = args.state.as_deref().map(|s| check_states("--state", s)).transpose()?;
    let query = ListJobsQuery {
        state,
        queue: args.queue.clone(),
        name: args.name.clone(),
        schedule: args.schedule.clone(),
        before: args.before,
        limit: Some(args.limit),
    };
    let list = api.client.list_jobs(&query).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if json {
        out.json(&list)?;
    } else if list.jobs.is_empty() {
        crate::output::note("no jobs");
    } else {
        out.table(&summary_table(&list.jobs))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `queued,failed` → the same, checked; an unknown state is a usage error naming `field`
/// and listing the valid ones.
pub(crate) fn check_states(field: &str, s: &str) -> Result<String> {
    let mut states = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word != UNSCHEDULABLE
            && let Err(e) = word.parse::<JobState>()
        {
            return Err(usage(format!("{field}: {e}, {UNSCHEDULABLE}")));
        }
        states.push(word);
    }
    if states.is_empty() {
        return Err(usage(format!("{field}: empty; give one or more states, comma-separated")));
    }
    Ok(states.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_checked() {
        assert_eq!(check_states("--state", "queued, failed").unwrap(), "queued,failed");
        assert_eq!(check_states("--state", "unschedulable").unwrap(), "unschedulable");
        let e = format!("{:#}", check_states("--state", "queued,bogus").unwrap_err());
        assert!(e.contains("'bogus'") && e.contains("succeeded"), "{e}");
        assert!(check_states("--state", ",").is_err());
    }
}
