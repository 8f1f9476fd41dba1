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

const JOB_STATE: &str = "SELECT state, reason IS NOT NULL, rowid FROM jobs WHERE id = ?1";
// With the rows' rowids: the settlement's updates then seek an integer where they searched
// the 36-character text keys again (valid inside this transaction, all they are used for).
pub(crate) const JOB_AND_STEPS: &str = "SELECT j.state, j.reason IS NOT NULL, s.name, s.state, s.reason, \
     j.rowid, s.rowid FROM jobs j JOIN steps s ON s.job_id = j.id WHERE j.id = ?1 ORDER BY s.idx";
const STEP_STATES: &str = "SELECT name, state, reason FROM steps WHERE job_id = ?1 ORDER BY idx";
const SET_STEP: &str = "UPDATE steps SET state = ?2, reason = ?3, run_after = ?4 WHERE rowid = ?1";
const END_PENDING: &str = "UPDATE steps SET state = ?2, reason = ?3, run_after = NULL \
     WHERE job_id = ?1 AND state IN ('waiting', 'ready')";
const SET_JOB_STATE: &str = "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason) WHERE rowid = ?1";
const FINISH_JOB: &str =
    "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason), finished_at = ?4 WHERE rowid = ?1";
const SET_FINISHED_AT: &str = "UPDATE jobs SET finished_at = ?2 WHERE rowid = ?1 AND finished_at IS NULL";

/// A job as settling reads it: its state, whether it has a reason, its steps in document
/// order, and the rowids of the job and of each step (same order) for this transaction.
struct Loaded {
    state: JobState,
    has_reason: bool,
    steps: Vec<StoredStep>,
    job_row: i64,
    step_rows: Vec<i64>,
}

/// What settling an attempt changed.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// The job's end was recorded by this call.
    pub(crate) job_finished: bool,
    /// The job's terminal state when `job_finished`.
    pub(crate) job_state: Option<JobState>,
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
    let loaded = load_job_and_steps(conn, &job)?;
    let (job_state, job_has_reason, steps) = (loaded.state, loaded.has_reason, &loaded.steps);
    let spec = spec_cache::spec(conn, a.job_id)?;
    // Read only when the domain consults it (an ended job), as before the rules moved.
    let attempts_running = job_state.is_terminal()
        && conn.prepare_cached(crate::control::ANY_RUNNING_OF_JOB)?.query_row([&job], |r| r.get(0))?;
    let plan = rota_domain::settle(&Ended {
        spec: &spec,
        job: job_state,
        job_has_reason,
        steps,
        step: &a.step,
        number: a.number,
        outcome,
        stop_cause: a.stop_cause,
        attempts_running,
        now,
        jitter01,
    })
    .map_err(|e| corrupt(format!("job {job}: {e}")))?;
    let ended = apply(conn, &job, &loaded, &plan, now)?;
    if ended.is_some() {
        spec_cache::forget(a.job_id);
    }
    Ok(Settled {
        job_finished: ended.is_some(),
        job_state: ended,
        readied: plan.readied,
        retried: plan.retried,
    })
}

/// Writes a settlement. Returns the job's terminal state when it recorded the job's end.
fn apply(
    conn: &Connection,
    job: &str,
    loaded: &Loaded,
    plan: &Settlement,
    now: DateTime<Utc>,
) -> Result<Option<JobState>> {
    let job_row = loaded.job_row;
    for c in &plan.steps {
        let row =
            *loaded.step_rows.get(c.step).ok_or_else(|| corrupt(format!("job {job}: no step {}", c.step)))?;
        let reason = c.reason.as_ref().map(ToString::to_string);
        conn.prepare_cached(SET_STEP)?.execute((row, c.state.as_str(), reason, c.run_after.map(ms)))?;
    }
    if let Some(p) = &plan.pending {
        conn.prepare_cached(END_PENDING)?.execute((job, p.state.as_str(), p.reason.to_string()))?;
    }
    Ok(match &plan.job {
        JobChange::Keep => None,
        JobChange::Finished => {
            (conn.prepare_cached(SET_FINISHED_AT)?.execute((job_row, ms(now)))? > 0).then_some(loaded.state)
        }
        JobChange::Live { state, reason } => {
            let reason = reason.as_ref().map(ToString::to_string);
            conn.prepare_cached(SET_JOB_STATE)?.execute((job_row, state.as_str(), reason))?;
            None
        }
        JobChange::End { state, reason } => {
            let reason = reason.as_ref().map(ToString::to_string);
            conn.prepare_cached(FINISH_JOB)?.execute((job_row, state.as_str(), reason, ms(now)))?;
            Some(*state)
        }
    })
}

/// The job's state, whether it has a reason, and its steps in document order: one
/// statement where two ran before (settling is the writer's largest cost per job).
fn load_job_and_steps(conn: &Connection, job: &str) -> Result<Loaded> {
    let mut st = conn.prepare_cached(JOB_AND_STEPS)?;
    let mut rows = st.query([job])?;
    let mut head = None;
    let mut steps = Vec::new();
    let mut step_rows = Vec::new();
    while let Some(r) = rows.next()? {
        if head.is_none() {
            head = Some((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, i64>(5)?));
        }
        steps.push(StoredStep {
            name: r.get(2)?,
            state: parse_name(&r.get::<_, String>(3)?)?,
            reason: r.get(4)?,
        });
        step_rows.push(r.get(6)?);
    }
    match head {
        Some((state, has_reason, job_row)) => {
            Ok(Loaded { state: parse_name(&state)?, has_reason, steps, job_row, step_rows })
        }
        // Every job has steps; a missing row is the job itself missing. A job with no
        // steps has no step rowids to need.
        None => {
            let (state, has_reason, job_row): (String, bool, i64) = conn
                .prepare_cached(JOB_STATE)?
                .query_row([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
                .ok_or_else(|| not_found(format!("job {job}")))?;
            Ok(Loaded {
                state: parse_name(&state)?,
                has_reason,
                steps: Vec::new(),
                job_row,
                step_rows: Vec::new(),
            })
        }
    }
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
