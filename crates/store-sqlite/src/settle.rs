//! What an ended attempt does to its step and its job, inside the caller's transaction.
//! The decisions come from `rota_domain::policy`; this module only applies them, plus the
//! store's own rule that an attempt stopped on purpose (cancel, revoke, deadline) ends its
//! step the way the stop says instead of retrying.

use crate::attempts::AttemptRow;
use crate::codec::{ms, parse_name};
use crate::error::{Result, corrupt, not_found};
use crate::jobs_read::stopped_step;
use crate::spec_cache;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, JobSpec, JobState, StepDecision, StepState};
use rota_domain::{decide_after_attempt, job_state_from_steps};
use rota_store::StopCause;
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;

const JOB_STATE: &str = "SELECT state FROM jobs WHERE id = ?1";
const STEP_STATES: &str = "SELECT name, state, reason FROM steps WHERE job_id = ?1 ORDER BY idx";
const SET_STEP: &str =
    "UPDATE steps SET state = ?3, reason = ?4, run_after = ?5 WHERE job_id = ?1 AND name = ?2";
const SKIP_PENDING: &str = "UPDATE steps SET state = 'skipped', reason = ?2, run_after = NULL \
     WHERE job_id = ?1 AND state IN ('waiting', 'ready')";
const SET_JOB_STATE: &str = "UPDATE jobs SET state = ?2 WHERE id = ?1";
const SET_JOB_REASON: &str = "UPDATE jobs SET reason = ?2 WHERE id = ?1 AND reason IS NULL";
const FINISH_JOB: &str =
    "UPDATE jobs SET state = ?2, reason = COALESCE(reason, ?3), finished_at = ?4 WHERE id = ?1";
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

/// A step's stored state and reason.
pub(crate) struct StepStatus {
    pub(crate) name: String,
    pub(crate) state: StepState,
    pub(crate) reason: Option<String>,
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
    let job_state = load_job_state(conn, &job)?;
    let spec = spec_cache::spec(conn, a.job_id)?;
    let step = spec
        .steps
        .iter()
        .find(|s| s.name == a.step)
        .ok_or_else(|| corrupt(format!("job {job} has no step '{}'", a.step)))?;
    let mut out = Settled::default();
    if job_state.is_terminal()
        && load_steps(conn, &job)?.iter().any(|s| s.name == a.step && s.state.is_terminal())
    {
        // The job's end already gave this step its final state while the attempt ran
        // (cancel, revoke, deadline): the attempt's outcome is its own record; the step
        // and the job keep the state they showed.
        out.job_finished = update_job(conn, &job, job_state, now)?;
        if out.job_finished {
            spec_cache::forget(a.job_id);
        }
        return Ok(out);
    }
    if let Some(cause) = stop_override(a.stop_cause, job_state, outcome) {
        let (state, reason) = stopped_step(cause);
        set_step(conn, &job, &a.step, state, Some(reason), None)?;
        out.job_finished = update_job(conn, &job, job_state, now)?;
        if out.job_finished {
            spec_cache::forget(a.job_id);
        }
        return Ok(out);
    }
    // Reported as cancelled although nothing asked it to stop (e.g. its worker shut down
    // hard): the worker could not run it to the end, which is what `Lost` means, so the
    // step's `on_lost` decides rather than the job ending cancelled.
    let unasked = AttemptOutcome::Lost { why: "stopped by its worker without a cancel".into() };
    let judged = if *outcome == AttemptOutcome::Cancelled { &unasked } else { outcome };
    let mut decision = decide_after_attempt(step, a.number, judged, now, jitter01);
    if let StepDecision::Retry { reason, .. } = &decision {
        // Once a step has failed for good the job is failing: nothing new starts, retries
        // included (the same rule that skips the steps not started yet).
        let steps = load_steps(conn, &job)?;
        if let Some(failed) = steps.iter().find(|s| s.state == StepState::Failed && s.name != a.step) {
            let reason = format!("{reason} (not retried: step '{}' failed)", failed.name);
            decision = StepDecision::Failed { reason };
        }
    }
    match decision {
        StepDecision::Succeeded => {
            set_step(conn, &job, &a.step, StepState::Succeeded, None, None)?;
            // Only a step that needs this one can have become ready (a single-step job,
            // the common case, has none: no query).
            let has_dependents = spec.steps.iter().any(|s| s.needs.contains(&a.step));
            if has_dependents && !job_state.is_terminal() {
                out.readied = ready_dependents(conn, &job, &spec)?;
            }
        }
        StepDecision::Retry { run_after, reason } => {
            set_step(conn, &job, &a.step, StepState::Ready, Some(&reason), Some(ms(run_after)))?;
            out.readied = 1;
            out.retried = true;
        }
        StepDecision::Failed { reason } => {
            set_step(conn, &job, &a.step, StepState::Failed, Some(&reason), None)?;
            conn.prepare_cached(SKIP_PENDING)?
                .execute((&job, format!("not run: step '{}' failed", a.step)))?;
            conn.prepare_cached(SET_JOB_REASON)?.execute((&job, format!("step '{}': {reason}", a.step)))?;
        }
        StepDecision::Stopped => {
            // Unreachable: a cancelled outcome is judged as lost above. Kept total so a
            // future policy change cannot leave a step running forever.
            set_step(conn, &job, &a.step, StepState::Cancelled, Some("cancelled by its worker"), None)?;
            conn.prepare_cached(SKIP_PENDING)?
                .execute((&job, format!("not run: step '{}' was cancelled", a.step)))?;
        }
    }
    out.job_finished = update_job(conn, &job, job_state, now)?;
    if out.job_finished {
        spec_cache::forget(a.job_id);
    }
    Ok(out)
}

/// The stop cause that decides the step's end instead of the policy, if any. A success
/// always counts: the work was done.
fn stop_override(cause: Option<StopCause>, job: JobState, outcome: &AttemptOutcome) -> Option<StopCause> {
    if *outcome == AttemptOutcome::Succeeded {
        return None;
    }
    cause.or(match job {
        JobState::Cancelled => Some(StopCause::Cancelled),
        JobState::Revoked => Some(StopCause::Revoked),
        // A failed job with a step still running can only have failed by its deadline.
        JobState::Failed => Some(StopCause::Deadline),
        _ => None,
    })
}

fn load_job_state(conn: &Connection, job: &str) -> Result<JobState> {
    let state: String = conn
        .prepare_cached(JOB_STATE)?
        .query_row([job], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found(format!("job {job}")))?;
    parse_name(&state)
}

/// Every step of a job in document order.
pub(crate) fn load_steps(conn: &Connection, job: &str) -> Result<Vec<StepStatus>> {
    let mut st = conn.prepare_cached(STEP_STATES)?;
    let mut rows = st.query([job])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(StepStatus {
            name: r.get(0)?,
            state: parse_name(&r.get::<_, String>(1)?)?,
            reason: r.get(2)?,
        });
    }
    Ok(out)
}

fn set_step(
    conn: &Connection,
    job: &str,
    step: &str,
    state: StepState,
    reason: Option<&str>,
    run_after: Option<i64>,
) -> Result<()> {
    conn.prepare_cached(SET_STEP)?.execute((job, step, state.as_str(), reason, run_after))?;
    Ok(())
}

/// Waiting steps whose needs have all succeeded become ready. Returns how many.
pub(crate) fn ready_dependents(conn: &Connection, job: &str, spec: &JobSpec) -> Result<u32> {
    let states: HashMap<String, StepState> =
        load_steps(conn, job)?.into_iter().map(|s| (s.name, s.state)).collect();
    let succeeded = |n: &String| states.get(n) == Some(&StepState::Succeeded);
    let mut readied = 0;
    for s in &spec.steps {
        if states.get(&s.name) == Some(&StepState::Waiting) && s.needs.iter().all(succeeded) {
            set_step(conn, job, &s.name, StepState::Ready, None, None)?;
            readied += 1;
        }
    }
    Ok(readied)
}

/// Brings the job's state in line with its steps. Returns true when this call recorded the
/// job's end (a terminal state, or the last running step of a stopped job ending).
pub(crate) fn update_job(conn: &Connection, job: &str, prior: JobState, now: DateTime<Utc>) -> Result<bool> {
    if prior.is_terminal() {
        // An ended job's steps have ended too; it is finished once no attempt runs.
        let attempts_running: bool =
            conn.prepare_cached(crate::control::ANY_RUNNING_OF_JOB)?.query_row([job], |r| r.get(0))?;
        if attempts_running {
            return Ok(false);
        }
        return Ok(conn.prepare_cached(SET_FINISHED_AT)?.execute((job, ms(now)))? > 0);
    }
    let steps = load_steps(conn, job)?;
    let any_running = steps.iter().any(|s| s.state == StepState::Running);
    let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
    match job_state_from_steps(&states) {
        Some(state) => {
            let reason = job_reason(state, &steps);
            conn.prepare_cached(FINISH_JOB)?.execute((job, state.as_str(), reason, ms(now)))?;
            Ok(true)
        }
        None => {
            let state = if any_running { JobState::Running } else { JobState::Queued };
            conn.prepare_cached(SET_JOB_STATE)?.execute((job, state.as_str()))?;
            Ok(false)
        }
    }
}

/// The reason a job ended in `state`, named after the step that decided it.
fn job_reason(state: JobState, steps: &[StepStatus]) -> String {
    if state == JobState::Succeeded {
        return match steps.len() {
            1 => "the step succeeded".to_string(),
            n => format!("all {n} steps succeeded"),
        };
    }
    let same = |s: &&StepStatus| s.state.as_str() == state.as_str();
    let decider = steps.iter().find(same).or_else(|| steps.iter().find(|s| s.state != StepState::Succeeded));
    match decider {
        Some(s) => format!("step '{}': {}", s.name, s.reason.as_deref().unwrap_or(s.state.as_str())),
        None => state.as_str().to_string(),
    }
}
