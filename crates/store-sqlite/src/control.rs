//! Operator and clock decisions about whole jobs: cancel/revoke, retry, deadlines. A job
//! that ends ends its steps with it, running ones included (job and steps always agree);
//! running attempts are only flagged (`stop_cause`) and returned, and end when the worker
//! reports or the lease expires, through [`crate::settle`].

use crate::codec::{job_id, ms, session_id, stop_cause_name};
use crate::error::{Result, conflict};
use crate::jobs_read::{load_row, load_spec, stopped_step};
use crate::settle::load_steps;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, JobState, StepState};
use rota_store::{JobRow, RunningAttempt, StopCause, StopKind, StopOutcome};
use rusqlite::Connection;
use std::collections::HashMap;

const END_PENDING_STEPS: &str = "UPDATE steps SET state = ?2, reason = ?3, run_after = NULL \
     WHERE job_id = ?1 AND state IN ('waiting', 'ready')";

// Steps whose attempt still runs take the job's end now; their attempts end on their own.
const END_RUNNING_STEPS: &str = "UPDATE steps SET state = ?2, reason = ?3, run_after = NULL \
     WHERE job_id = ?1 AND state = 'running'";

/// Whether any attempt of the job still runs.
pub(crate) const ANY_RUNNING_OF_JOB: &str =
    "SELECT EXISTS (SELECT 1 FROM attempts WHERE job_id = ?1 AND status = 'running')";

pub(crate) const RUNNING_OF_JOB: &str = "SELECT id, step, session FROM attempts WHERE job_id = ?1 AND status = 'running' \
     ORDER BY id";

const FLAG_RUNNING: &str =
    "UPDATE attempts SET stop_cause = ?2 WHERE job_id = ?1 AND status = 'running' AND stop_cause IS NULL";

const END_JOB: &str = "UPDATE jobs SET state = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1";

const RESET_STEP: &str =
    "UPDATE steps SET state = ?3, reason = NULL, run_after = NULL WHERE job_id = ?1 AND name = ?2";

const REQUEUE_JOB: &str = "UPDATE jobs SET state = 'queued', reason = NULL, finished_at = NULL WHERE id = ?1";

// `+state` keeps the planner on the deadline index instead of scanning every live job.
const PAST_DEADLINE: &str = "SELECT id FROM jobs WHERE deadline IS NOT NULL AND deadline < ?1 \
     AND +state IN ('queued', 'running')";

/// Cancels or revokes a job that has not ended.
pub(crate) fn stop_job(
    conn: &Connection,
    id: JobId,
    kind: StopKind,
    now: DateTime<Utc>,
) -> Result<StopOutcome> {
    let row = load_row(conn, id)?;
    if row.state.is_terminal() {
        return Ok(StopOutcome { row, changed: false, running: Vec::new() });
    }
    let (state, cause) = match kind {
        StopKind::Cancel => (JobState::Cancelled, StopCause::Cancelled),
        StopKind::Revoke => (JobState::Revoked, StopCause::Revoked),
    };
    let running = end_job(conn, id, state, cause, now)?;
    Ok(StopOutcome { row: load_row(conn, id)?, changed: true, running })
}

/// Ends a live job in `state`: steps not started end the way `cause` says, running
/// attempts are flagged and returned. `finished_at` waits for the last of them.
fn end_job(
    conn: &Connection,
    id: JobId,
    state: JobState,
    cause: StopCause,
    now: DateTime<Utc>,
) -> Result<Vec<RunningAttempt>> {
    end_job_with(conn, id, state, cause, now, true)
}

/// [`end_job`], where `stop_running: false` lets running attempts finish (a revoke without
/// `--terminate`): they are neither flagged nor returned, and nothing after them starts
/// because the job has ended.
pub(crate) fn end_job_with(
    conn: &Connection,
    id: JobId,
    state: JobState,
    cause: StopCause,
    now: DateTime<Utc>,
    stop_running: bool,
) -> Result<Vec<RunningAttempt>> {
    let job = id.to_string();
    let (step_state, reason) = match cause {
        // Steps a deadline never started are skipped, not failed: they did nothing wrong.
        StopCause::Deadline => (StepState::Skipped, "deadline passed"),
        other => stopped_step(other),
    };
    conn.prepare_cached(END_PENDING_STEPS)?.execute((&job, step_state.as_str(), reason))?;
    // A running step shows the job's end at once instead of `running` under an ended job.
    // Its attempt keeps its own record (it may still succeed if it was left to finish).
    let (run_state, run_reason) = stopped_step(cause);
    let run_reason = if stop_running {
        run_reason.to_string()
    } else {
        format!("{run_reason} while it ran (its attempt was left to finish)")
    };
    conn.prepare_cached(END_RUNNING_STEPS)?.execute((&job, run_state.as_str(), run_reason))?;
    let running = conn
        .prepare_cached(RUNNING_OF_JOB)?
        .query_map([&job], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if stop_running {
        conn.prepare_cached(FLAG_RUNNING)?.execute((&job, stop_cause_name(cause)))?;
    }
    let finished_at = running.is_empty().then(|| ms(now));
    let job_reason = stopped_step(cause).1;
    conn.prepare_cached(END_JOB)?.execute((&job, state.as_str(), job_reason, finished_at))?;
    running
        .into_iter()
        .filter(|_| stop_running)
        .map(|(attempt, step, session)| {
            Ok(RunningAttempt {
                attempt_id: AttemptId(attempt),
                job_id: id,
                step,
                session: session_id(&session)?,
                cause,
            })
        })
        .collect()
}

/// Puts a failed, cancelled or revoked job back in the queue; succeeded steps are kept.
pub(crate) fn retry_job(conn: &Connection, id: JobId) -> Result<JobRow> {
    let row = load_row(conn, id)?;
    if !row.state.is_terminal() || row.state == JobState::Succeeded {
        return Err(conflict(format!(
            "job {id} is {}; only a failed, cancelled or revoked job can be retried",
            row.state
        )));
    }
    let job = id.to_string();
    let still = conn
        .prepare_cached(RUNNING_OF_JOB)?
        .query_map([&job], |r| r.get::<_, String>(1))?
        .next()
        .transpose()?;
    if let Some(step) = still {
        return Err(conflict(format!("job {id}: step '{step}' is still stopping; retry once it has ended")));
    }
    let steps = load_steps(conn, &job)?;
    let states: HashMap<&str, StepState> = steps.iter().map(|s| (s.name.as_str(), s.state)).collect();
    let spec = load_spec(conn, id)?;
    for s in spec.steps.iter().filter(|s| states.get(s.name.as_str()) != Some(&StepState::Succeeded)) {
        let needs_met = s.needs.iter().all(|n| states.get(n.as_str()) == Some(&StepState::Succeeded));
        let state = if needs_met { StepState::Ready } else { StepState::Waiting };
        conn.prepare_cached(RESET_STEP)?.execute((&job, &s.name, state.as_str()))?;
    }
    conn.prepare_cached(REQUEUE_JOB)?.execute([&job])?;
    load_row(conn, id)
}

/// Fails live jobs whose deadline passed; returns their running attempts, flagged to stop.
pub(crate) fn expire_deadlines(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>> {
    let ids = conn
        .prepare_cached(PAST_DEADLINE)?
        .query_map([ms(now)], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(end_job(conn, job_id(&id)?, JobState::Failed, StopCause::Deadline, now)?);
    }
    Ok(out)
}
