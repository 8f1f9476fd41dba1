//! What an ended attempt does to its step and its job, inside the caller's transaction: lock
//! the job row (so two servers settling steps of one job take turns), read the compact state
//! `rota_domain::settle` needs (job state, document, steps), then write the settlement it
//! returns. No rule and no reason text lives here.

use crate::attempts::AttemptRow;
use crate::codec::parse_name;
use crate::error::{Result, corrupt, not_found};
use crate::tx::{Tx, exec, one, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, Ended, JobChange, JobId, JobState, Settlement, StoredStep};

const LOCK_JOB: &str = "SELECT state, reason IS NOT NULL FROM jobs WHERE id = $1 FOR UPDATE";
const STEP_STATES: &str = "SELECT name, state, reason FROM steps WHERE job_id = $1 ORDER BY idx";
const SET_STEP: &str =
    "UPDATE steps SET state = $3, reason = $4, run_after = $5 WHERE job_id = $1 AND name = $2";
const END_PENDING: &str = "UPDATE steps SET state = $2, reason = $3, run_after = NULL \
     WHERE job_id = $1 AND state IN ('waiting', 'ready')";
const SET_JOB_STATE: &str = "UPDATE jobs SET state = $2, reason = COALESCE($3, reason) WHERE id = $1";
const FINISH_JOB: &str =
    "UPDATE jobs SET state = $2, reason = COALESCE($3, reason), finished_at = $4 WHERE id = $1";
const SET_FINISHED_AT: &str = "UPDATE jobs SET finished_at = $2 WHERE id = $1 AND finished_at IS NULL";

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

/// Locks the job's row for the rest of the transaction; returns its state.
pub(crate) async fn lock_job(tx: &Tx<'_>, id: JobId) -> Result<JobState> {
    Ok(lock_job_reason(tx, id).await?.0)
}

async fn lock_job_reason(tx: &Tx<'_>, id: JobId) -> Result<(JobState, bool)> {
    let r = opt(tx, LOCK_JOB, &[&id.0]).await?.ok_or_else(|| not_found(format!("job {id}")))?;
    Ok((parse_name(r.try_get(0)?)?, r.try_get(1)?))
}

/// Moves the step of an attempt that just ended, then the job. `record` is the write of
/// the attempt's outcome, not sent yet: it goes out first, in the round trip that reads the
/// job. The caller locked the job row before it read the attempt.
pub(crate) async fn settle(
    tx: &Tx<'_>,
    a: &AttemptRow,
    outcome: &AttemptOutcome,
    now: DateTime<Utc>,
    jitter01: f64,
    record: impl std::future::Future<Output = Result<u64>>,
) -> Result<Settled> {
    // Pipelined (sent together, run in the order sent): the outcome is recorded, the lock
    // taken and the steps read in one round trip. Every statement is prepared first: a
    // statement still being prepared would be sent after the others.
    tx.prepare_cached(LOCK_JOB).await?;
    tx.prepare_cached(STEP_STATES).await?;
    let (_, (job_state, job_has_reason), steps) =
        tokio::try_join!(record, lock_job_reason(tx, a.job_id), load_steps(tx, a.job_id))?;
    let spec = crate::spec_cache::spec(tx, a.job_id).await?;
    // Read only when the domain consults it (an ended job).
    let attempts_running = job_state.is_terminal()
        && one(tx, crate::control::ANY_RUNNING_OF_JOB, &[&a.job_id.0]).await?.try_get(0)?;
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
    .map_err(|e| corrupt(format!("job {}: {e}", a.job_id)))?;
    let ended = apply(tx, a.job_id, job_state, &steps, &plan, now).await?;
    if ended.is_some() {
        crate::spec_cache::forget(a.job_id);
    }
    Ok(Settled {
        job_finished: ended.is_some(),
        job_state: ended,
        readied: plan.readied,
        retried: plan.retried,
    })
}

/// Writes a settlement. Returns the job's terminal state when it recorded the job's end.
pub(crate) async fn apply(
    tx: &Tx<'_>,
    job: JobId,
    job_state: JobState,
    steps: &[StoredStep],
    plan: &Settlement,
    now: DateTime<Utc>,
) -> Result<Option<JobState>> {
    // The last step write goes out with the job's write, in one round trip (pipelined,
    // run in the order sent): a single-step job's end is then one round trip.
    let (last, before) = match (plan.pending.is_none(), plan.steps.split_last()) {
        (true, Some((last, before))) => (Some(last), before),
        _ => (None, plan.steps.as_slice()),
    };
    for c in before {
        set_step(tx, job, steps, c).await?;
    }
    if let Some(p) = &plan.pending {
        exec(tx, END_PENDING, &[&job.0, &p.state.as_str(), &p.reason.to_string()]).await?;
    }
    if last.is_some() {
        tx.prepare_cached(SET_STEP).await?;
    }
    let step_write = async {
        match last {
            Some(c) => set_step(tx, job, steps, c).await,
            None => Ok(()),
        }
    };
    let job_write = async {
        Ok(match &plan.job {
            JobChange::Keep => None,
            JobChange::Finished => {
                (exec(tx, SET_FINISHED_AT, &[&job.0, &now]).await? > 0).then_some(job_state)
            }
            JobChange::Live { state, reason } => {
                let reason = reason.as_ref().map(ToString::to_string);
                exec(tx, SET_JOB_STATE, &[&job.0, &state.as_str(), &reason]).await?;
                None
            }
            JobChange::End { state, reason } => {
                let reason = reason.as_ref().map(ToString::to_string);
                exec(tx, FINISH_JOB, &[&job.0, &state.as_str(), &reason, &now]).await?;
                Some(*state)
            }
        })
    };
    let ((), ended) = tokio::try_join!(step_write, job_write)?;
    Ok(ended)
}

async fn set_step(tx: &Tx<'_>, job: JobId, steps: &[StoredStep], c: &rota_domain::StepChange) -> Result<()> {
    let name = &steps.get(c.step).ok_or_else(|| corrupt(format!("job {job}: no step {}", c.step)))?.name;
    let reason = c.reason.as_ref().map(ToString::to_string);
    exec(tx, SET_STEP, &[&job.0, name, &c.state.as_str(), &reason, &c.run_after]).await?;
    Ok(())
}

/// Every step of a job in document order.
pub(crate) async fn load_steps(tx: &Tx<'_>, job: JobId) -> Result<Vec<StoredStep>> {
    rows(tx, STEP_STATES, &[&job.0])
        .await?
        .iter()
        .map(|r| {
            Ok(StoredStep { name: r.try_get(0)?, state: parse_name(r.try_get(1)?)?, reason: r.try_get(2)? })
        })
        .collect()
}
