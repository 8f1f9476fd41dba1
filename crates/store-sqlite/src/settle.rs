//! What an ended attempt does to its step and its job, inside the caller's transaction: read
//! the compact state `rota_domain::settle` needs (job state, cached document, steps), then
//! write the settlement it returns. No rule and no reason text lives here.

use crate::attempts::AttemptRow;
use crate::codec::{ms, parse_name};
use crate::error::{Result, corrupt, not_found};
use crate::spec_cache;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, Ended, JobChange, JobState, Settlement, StoredStep};
use rusqlite::{Connection, OptionalExtension};

const JOB_STATE: &str = "SELECT state, reason IS NOT NULL FROM jobs WHERE id = ?1";
const STEP_STATES: &str = "SELECT name, state, reason FROM steps WHERE job_id = ?1 ORDER BY idx";
const SET_STEP: &str =
    "UPDATE steps SET state = ?3, reason = ?4, run_after = ?5 WHERE job_id = ?1 AND name = ?2";
const END_PENDING: &str = "UPDATE steps SET state = ?2, reason = ?3, run_after = NULL \
     WHERE job_id = ?1 AND state IN ('waiting', 'ready')";
const SET_JOB_STATE: &str = "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason) WHERE id = ?1";
const FINISH_JOB: &str =
    "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason), finished_at = ?4 WHERE id = ?1";
const SET_FINISHED_AT: &str = "UPDATE jobs SET finished_at = ?2 WHERE id = ?1 AND finished_at IS NULL";

/// What settling an attempt changed.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// The job's end was recorded by this call.
    pub(crate) job_finished: bool,
    /// Steps that became claimable (dependents, or the step itself on retry).
    pub(crate) readied: u32,
    /// The step will run again.
    pub(crate) retried: bool,
}

/// Moves the step of an attempt that just ended (already recorded as `outcome`), then the job.
pub(crate) fn settle(
    conn: &Connection,
    a: &AttemptRow,
    outcome: &AttemptOutcome,
    now: DateTime<Utc>,
    jitter01: f64,
) -> Result<Settled> {
    let job = a.job_id.to_string();
    let (job_state, job_has_reason) = load_job_state(conn, &job)?;
    let spec = spec_cache::spec(conn, a.job_id)?;
    let steps = load_steps(conn, &job)?;
    // Read only when the domain consults it (an ended job), as before the rules moved.
    let attempts_running = job_state.is_terminal()
        && conn.prepare_cached(crate::control::ANY_RUNNING_OF_JOB)?.query_row([&job], |r| r.get(0))?;
    let plan = rota_domain::settle(&Ended {
        spec: &spec,
        job: job_state,
        job_has_reason,
        steps: &steps,
        step: &a.step,
        number: a.number,
        outcome,
        stop_cause: a.stop_cause,
        attempts_running,
        now,
        jitter01,
    })
    .map_err(|e| corrupt(format!("job {job}: {e}")))?;
    let job_finished = apply(conn, &job, &steps, &plan, now)?;
    if job_finished {
        spec_cache::forget(a.job_id);
    }
    Ok(Settled { job_finished, readied: plan.readied, retried: plan.retried })
}

/// Writes a settlement. Returns true when it recorded the job's end.
fn apply(
    conn: &Connection,
    job: &str,
    steps: &[StoredStep],
    plan: &Settlement,
    now: DateTime<Utc>,
) -> Result<bool> {
    for c in &plan.steps {
        let name = &steps.get(c.step).ok_or_else(|| corrupt(format!("job {job}: no step {}", c.step)))?.name;
        let reason = c.reason.as_ref().map(ToString::to_string);
        conn.prepare_cached(SET_STEP)?.execute((job, name, c.state.as_str(), reason, c.run_after.map(ms)))?;
    }
    if let Some(p) = &plan.pending {
        conn.prepare_cached(END_PENDING)?.execute((job, p.state.as_str(), p.reason.to_string()))?;
    }
    Ok(match &plan.job {
        JobChange::Keep => false,
        JobChange::Finished => conn.prepare_cached(SET_FINISHED_AT)?.execute((job, ms(now)))? > 0,
        JobChange::Live { state, reason } => {
            let reason = reason.as_ref().map(ToString::to_string);
            conn.prepare_cached(SET_JOB_STATE)?.execute((job, state.as_str(), reason))?;
            false
        }
        JobChange::End { state, reason } => {
            let reason = reason.as_ref().map(ToString::to_string);
            conn.prepare_cached(FINISH_JOB)?.execute((job, state.as_str(), reason, ms(now)))?;
            true
        }
    })
}

/// The job's state and whether it has a reason.
fn load_job_state(conn: &Connection, job: &str) -> Result<(JobState, bool)> {
    let (state, has_reason): (String, bool) = conn
        .prepare_cached(JOB_STATE)?
        .query_row([job], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| not_found(format!("job {job}")))?;
    Ok((parse_name(&state)?, has_reason))
}

/// Every step of a job in document order.
pub(crate) fn load_steps(conn: &Connection, job: &str) -> Result<Vec<StoredStep>> {
    let mut st = conn.prepare_cached(STEP_STATES)?;
    let mut rows = st.query([job])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(StoredStep {
            name: r.get(0)?,
            state: parse_name(&r.get::<_, String>(1)?)?,
            reason: r.get(2)?,
        });
    }
    Ok(out)
}
