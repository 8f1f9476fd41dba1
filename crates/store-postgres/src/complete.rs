//! Worker reports on attempts they hold: the pid at start and the outcome at the end.
//! Fencing lives here: only the holding session may report, a repeat of the recorded
//! outcome is answered with it, anything else is a `Conflict` that changes nothing. A batch
//! locks the job rows it touches first, in job id order, so two servers completing steps
//! of the same jobs never deadlock, then its attempt rows in attempt id order, so a
//! heartbeat renewing them never deadlocks with it; each item then runs in its own savepoint.

use crate::attempts::{AttemptRow, end_attempt, load_attempt};
use crate::error::{Result, conflict, not_found};
use crate::settle::lock_job;
use crate::tx::{Tx, exec, item, rows};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, AttemptStatus, JobId, SessionId};
use rota_store::{Completion, CompletionRecorded, ConflictKind};
use std::collections::BTreeSet;
use uuid::Uuid;

const SET_PID: &str = "UPDATE attempts SET pid = $2 WHERE id = $1";
const SET_OUTPUTS: &str = "UPDATE attempts SET outputs = $2 WHERE id = $1";

const JOBS_OF_ATTEMPTS: &str = "SELECT DISTINCT job_id FROM attempts WHERE id = ANY($1)";

/// The batch's attempt rows, locked in attempt id order (after their jobs' rows): the order
/// a heartbeat renewing the same attempts locks them in (`lease::RENEW`). Items are then
/// recorded in the order they came, with every row they update already held.
const LOCK_ATTEMPTS: &str = "SELECT 1 FROM attempts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// Records the pid of a running attempt the session holds.
pub(crate) async fn record_start(
    tx: &Tx<'_>,
    session: SessionId,
    attempt: AttemptId,
    pid: u32,
) -> Result<()> {
    let a = load_attempt(tx, attempt).await?.ok_or_else(|| not_found(format!("attempt {attempt}")))?;
    check_held(&a, session)?;
    exec(tx, SET_PID, &[&attempt.0, &i64::from(pid)]).await?;
    Ok(())
}

/// Records each completion, one savepoint each, after locking every job row they touch.
pub(crate) async fn complete(
    tx: &mut Tx<'_>,
    items: &[Completion],
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<CompletionRecorded>>> {
    let ids: Vec<i64> = items.iter().map(|c| c.attempt_id.0).collect();
    let jobs: BTreeSet<Uuid> =
        rows(tx, JOBS_OF_ATTEMPTS, &[&ids]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    for job in jobs {
        // Pruned meanwhile: the item finds no attempt and says so.
        if let Err(e) = lock_job(tx, JobId(job)).await
            && !matches!(e, crate::error::Error::Store(_))
        {
            return Err(e);
        }
    }
    // One attempt cannot be locked out of order.
    if items.len() > 1 {
        rows(tx, LOCK_ATTEMPTS, &[&ids]).await?;
    }
    let mut out = Vec::with_capacity(items.len());
    for c in items {
        out.push(item!(tx, |sp| complete_one(&sp, c, now).await));
    }
    Ok(out)
}

async fn complete_one(tx: &Tx<'_>, c: &Completion, now: DateTime<Utc>) -> Result<CompletionRecorded> {
    // The batch locked the job row of every attempt it names (`JOBS_OF_ATTEMPTS`), so the
    // attempt read here is current.
    let a = load_attempt(tx, c.attempt_id)
        .await?
        .ok_or_else(|| not_found(format!("attempt {}", c.attempt_id)))?;
    if a.job_id != c.job_id || a.step != c.step {
        return Err(conflict(
            ConflictKind::WrongAttempt,
            format!(
                "attempt {} belongs to job {} step '{}', not job {} step '{}'",
                a.id, a.job_id, a.step, c.job_id, c.step
            ),
        ));
    }
    if a.session != c.session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {} is held by another worker session", a.id),
        ));
    }
    if a.status != AttemptStatus::Running {
        return match &a.outcome {
            Some(recorded) if *recorded == c.outcome => Ok(CompletionRecorded {
                attempt_id: a.id,
                status: a.status,
                outcome: recorded.clone(),
                repeated: true,
                job_finished: false,
                job_state: None,
                readied: 0,
            }),
            _ => {
                Err(conflict(ConflictKind::Ended, format!("attempt {} already ended as {}", a.id, a.status)))
            }
        };
    }
    // Outputs only count from a success: a failed attempt's are never seen by a dependent.
    if c.outcome == rota_domain::AttemptOutcome::Succeeded && !c.outputs.is_empty() {
        exec(tx, SET_OUTPUTS, &[&a.id.0, &serde_json::to_string(&c.outputs)?]).await?;
    }
    let settled = end_attempt(tx, &a, &c.outcome, c.run_ms, now, c.jitter01).await?;
    Ok(CompletionRecorded {
        attempt_id: a.id,
        status: c.outcome.status(),
        outcome: c.outcome.clone(),
        repeated: false,
        job_finished: settled.job_finished,
        job_state: settled.job_state,
        readied: settled.readied,
    })
}

/// `Conflict` unless `session` holds the running attempt.
pub(crate) fn check_held(a: &AttemptRow, session: SessionId) -> Result<()> {
    if a.session != session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {} is held by another worker session", a.id),
        ));
    }
    if a.status != AttemptStatus::Running {
        return Err(conflict(
            ConflictKind::Ended,
            format!("attempt {} is no longer running ({})", a.id, a.status),
        ));
    }
    Ok(())
}
