//! Operator and clock decisions about whole jobs: cancel/revoke, retry, deadlines. The
//! decisions are `rota_domain::control`'s (`end_job`, `retry_job`); this module reads what
//! they need and writes what they return. Running attempts are only flagged (`stop_cause`)
//! and returned, and end when the worker reports or the lease expires, through
//! [`crate::settle`].

use crate::codec::{job_id, ms, parse_name, session_id, stop_cause_name};
use crate::error::{Result, conflict, corrupt};
use crate::jobs_read::{load_row, load_spec};
use crate::settle::load_steps;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobEnd, JobId, JobState};
use rota_store::ConflictKind;
use rota_store::{JobRow, RunningAttempt, StopKind, StopOutcome};
use rusqlite::Connection;

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

const REQUEUE_JOB: &str = "UPDATE jobs SET state = ?2, reason = NULL, finished_at = NULL WHERE id = ?1";

// `+state` keeps the planner on the deadline index instead of scanning every live job.
const PAST_DEADLINE: &str = "SELECT id, state FROM jobs WHERE deadline IS NOT NULL AND deadline < ?1 \
     AND +state IN ('queued', 'running')";

/// Cancels or revokes a job that has not ended.
pub(crate) fn stop_job(
    conn: &Connection,
    id: JobId,
    kind: StopKind,
    now: DateTime<Utc>,
) -> Result<StopOutcome> {
    let how = match kind {
        StopKind::Cancel => JobEnd::Cancel,
        StopKind::Revoke => JobEnd::Revoke,
    };
    let row = load_row(conn, id)?;
    match end_job(conn, id, row.state, how, now, true)? {
        Some(running) => Ok(StopOutcome { row: load_row(conn, id)?, changed: true, running }),
        None => Ok(StopOutcome { row, changed: false, running: Vec::new() }),
    }
}

/// Ends the job `id`, now in state `current`, the way `how` says: steps not started and
/// running steps take the job's end, running attempts are flagged and returned (unless
/// `stop_running` is false: a revoke without `--terminate` lets them finish, neither
/// flagged nor returned). `None` if the job had ended already. `finished_at` waits for
/// the last running attempt.
pub(crate) fn end_job(
    conn: &Connection,
    id: JobId,
    current: JobState,
    how: JobEnd,
    now: DateTime<Utc>,
    stop_running: bool,
) -> Result<Option<Vec<RunningAttempt>>> {
    let Some(ending) = rota_domain::end_job(current, how, stop_running) else {
        return Ok(None);
    };
    let job = id.to_string();
    let running = conn
        .prepare_cached(RUNNING_OF_JOB)?
        .query_map([&job], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (pending, run) = (&ending.pending, &ending.running);
    conn.prepare_cached(END_PENDING_STEPS)?.execute((
        &job,
        pending.state.as_str(),
        pending.reason.to_string(),
    ))?;
    conn.prepare_cached(END_RUNNING_STEPS)?.execute((&job, run.state.as_str(), run.reason.to_string()))?;
    if let Some(cause) = ending.flag {
        conn.prepare_cached(FLAG_RUNNING)?.execute((&job, stop_cause_name(cause)))?;
    }
    let finished_at = ending.finished_now(!running.is_empty()).then(|| ms(now));
    conn.prepare_cached(END_JOB)?.execute((
        &job,
        ending.state.as_str(),
        ending.reason.to_string(),
        finished_at,
    ))?;
    let Some(cause) = ending.flag else {
        return Ok(Some(Vec::new()));
    };
    running
        .into_iter()
        .map(|(attempt, step, session)| {
            Ok(RunningAttempt {
                attempt_id: AttemptId(attempt),
                job_id: id,
                step,
                session: session_id(&session)?,
                cause,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Puts a failed, cancelled or revoked job back in the queue; succeeded steps are kept.
pub(crate) fn retry_job(conn: &Connection, id: JobId) -> Result<JobRow> {
    let row = load_row(conn, id)?;
    let job = id.to_string();
    let stopping = conn
        .prepare_cached(RUNNING_OF_JOB)?
        .query_map([&job], |r| r.get::<_, String>(1))?
        .next()
        .transpose()?;
    let steps = load_steps(conn, &job)?;
    let spec = load_spec(conn, id)?;
    let requeue = rota_domain::retry_job(id, row.state, &spec, &steps, stopping.as_deref())
        .map_err(|e| conflict(ConflictKind::JobState, e.to_string()))?;
    for reset in &requeue.steps {
        let name = &spec
            .steps
            .get(reset.step)
            .ok_or_else(|| corrupt(format!("job {id}: no step {}", reset.step)))?
            .name;
        conn.prepare_cached(RESET_STEP)?.execute((&job, name, reset.state.as_str()))?;
    }
    conn.prepare_cached(REQUEUE_JOB)?.execute((&job, requeue.state.as_str()))?;
    load_row(conn, id)
}

/// Fails live jobs whose deadline passed; returns their running attempts, flagged to stop.
pub(crate) fn expire_deadlines(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>> {
    let jobs = conn
        .prepare_cached(PAST_DEADLINE)?
        .query_map([ms(now)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (id, state) in jobs {
        let ended = end_job(conn, job_id(&id)?, parse_name(&state)?, JobEnd::Deadline, now, true)?;
        out.extend(ended.unwrap_or_default());
    }
    Ok(out)
}
