//! Operator and clock decisions about whole jobs: cancel/revoke, retry, deadlines. The
//! decisions are `rota_domain::control`'s (`end_job`, `retry_job`); this module reads what
//! they need (the job row locked) and writes what they return. Running attempts are only
//! flagged (`stop_cause`) and returned, and end when the worker reports or the lease
//! expires, through [`crate::settle`].

use crate::codec::stop_cause_name;
use crate::error::{Result, conflict, corrupt};
use crate::jobs_read::{load_row, load_spec};
use crate::settle::{load_steps, lock_job};
use crate::tx::{Tx, exec, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobEnd, JobId, JobState, SessionId};
use rota_store::{ConflictKind, JobRow, RunningAttempt, StopKind, StopOutcome};
use uuid::Uuid;

const END_PENDING_STEPS: &str = "UPDATE steps SET state = $2, reason = $3, run_after = NULL \
     WHERE job_id = $1 AND state IN ('waiting', 'ready')";

// Steps whose attempt still runs take the job's end now; their attempts end on their own.
const END_RUNNING_STEPS: &str = "UPDATE steps SET state = $2, reason = $3, run_after = NULL \
     WHERE job_id = $1 AND state = 'running'";

/// Whether any attempt of the job still runs.
pub(crate) const ANY_RUNNING_OF_JOB: &str =
    "SELECT EXISTS (SELECT 1 FROM attempts WHERE job_id = $1 AND status = 'running')";

const RUNNING_OF_JOB: &str =
    "SELECT id, step, session FROM attempts WHERE job_id = $1 AND status = 'running' ORDER BY id";

const FLAG_RUNNING: &str =
    "UPDATE attempts SET stop_cause = $2 WHERE job_id = $1 AND status = 'running' AND stop_cause IS NULL";

const END_JOB: &str = "UPDATE jobs SET state = $2, reason = $3, finished_at = $4 WHERE id = $1";

const RESET_STEP: &str =
    "UPDATE steps SET state = $3, reason = NULL, run_after = NULL WHERE job_id = $1 AND name = $2";

const REQUEUE_JOB: &str = "UPDATE jobs SET state = $2, reason = NULL, finished_at = NULL WHERE id = $1";

const PAST_DEADLINE: &str = "SELECT id FROM jobs WHERE deadline IS NOT NULL AND deadline < $1 \
     AND state IN ('queued', 'running') ORDER BY id";

/// Cancels or revokes a job that has not ended.
pub(crate) async fn stop_job(
    tx: &Tx<'_>,
    id: JobId,
    kind: StopKind,
    now: DateTime<Utc>,
) -> Result<StopOutcome> {
    let how = match kind {
        StopKind::Cancel => JobEnd::Cancel,
        StopKind::Revoke => JobEnd::Revoke,
    };
    let state = lock_job(tx, id).await?;
    match end_job(tx, id, state, how, now, true).await? {
        Some(running) => Ok(StopOutcome { row: load_row(tx, id).await?, changed: true, running }),
        None => Ok(StopOutcome { row: load_row(tx, id).await?, changed: false, running: Vec::new() }),
    }
}

/// Ends the job `id` (its row locked by the caller), now in state `current`, the way `how`
/// says: steps not started and running steps take the job's end, running attempts are
/// flagged and returned (unless `stop_running` is false: a revoke without `--terminate`
/// lets them finish, neither flagged nor returned). `None` if the job had ended already.
/// `finished_at` waits for the last running attempt.
pub(crate) async fn end_job(
    tx: &Tx<'_>,
    id: JobId,
    current: JobState,
    how: JobEnd,
    now: DateTime<Utc>,
    stop_running: bool,
) -> Result<Option<Vec<RunningAttempt>>> {
    let Some(ending) = rota_domain::end_job(current, how, stop_running) else {
        return Ok(None);
    };
    let running = rows(tx, RUNNING_OF_JOB, &[&id.0]).await?;
    let (pending, run) = (&ending.pending, &ending.running);
    exec(tx, END_PENDING_STEPS, &[&id.0, &pending.state.as_str(), &pending.reason.to_string()]).await?;
    exec(tx, END_RUNNING_STEPS, &[&id.0, &run.state.as_str(), &run.reason.to_string()]).await?;
    if let Some(cause) = ending.flag {
        exec(tx, FLAG_RUNNING, &[&id.0, &stop_cause_name(cause)]).await?;
    }
    let finished_at = ending.finished_now(!running.is_empty()).then_some(now);
    exec(tx, END_JOB, &[&id.0, &ending.state.as_str(), &ending.reason.to_string(), &finished_at]).await?;
    let Some(cause) = ending.flag else {
        return Ok(Some(Vec::new()));
    };
    running
        .iter()
        .map(|r| {
            Ok(RunningAttempt {
                attempt_id: AttemptId(r.try_get(0)?),
                job_id: id,
                step: r.try_get(1)?,
                session: SessionId(r.try_get::<_, Uuid>(2)?),
                cause,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Puts a failed, cancelled or revoked job back in the queue; succeeded steps are kept.
pub(crate) async fn retry_job(tx: &Tx<'_>, id: JobId) -> Result<JobRow> {
    let state = lock_job(tx, id).await?;
    let stopping: Option<String> =
        opt(tx, RUNNING_OF_JOB, &[&id.0]).await.map(|r| r.map(|r| r.try_get(1)).transpose())??;
    let steps = load_steps(tx, id).await?;
    let spec = load_spec(tx, id).await?;
    let requeue = rota_domain::retry_job(id, state, &spec, &steps, stopping.as_deref())
        .map_err(|e| conflict(ConflictKind::JobState, e.to_string()))?;
    for reset in &requeue.steps {
        let name = &spec
            .steps
            .get(reset.step)
            .ok_or_else(|| corrupt(format!("job {id}: no step {}", reset.step)))?
            .name;
        exec(tx, RESET_STEP, &[&id.0, name, &reset.state.as_str()]).await?;
    }
    exec(tx, REQUEUE_JOB, &[&id.0, &requeue.state.as_str()]).await?;
    load_row(tx, id).await
}

/// Fails live jobs whose deadline passed; returns their running attempts, flagged to stop.
pub(crate) async fn expire_deadlines(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>> {
    let ids: Vec<Uuid> =
        rows(tx, PAST_DEADLINE, &[&now]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        let id = JobId(id);
        // Locked and read again: it may have ended since it was selected.
        let state = lock_job(tx, id).await?;
        let ended = end_job(tx, id, state, JobEnd::Deadline, now, true).await?;
        out.extend(ended.unwrap_or_default());
    }
    Ok(out)
}
