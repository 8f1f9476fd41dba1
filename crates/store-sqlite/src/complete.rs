//! Worker reports on attempts they hold: the pid at start and the outcome at the end.
//! Fencing lives here: only the holding session may report, a repeat of the recorded
//! outcome is answered with it, anything else is a `Conflict` that changes nothing.

use crate::attempts::{AttemptRow, end_attempt, load_attempt};
use crate::error::{Result, conflict, not_found};
use crate::writer::unsaved_item;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, AttemptStatus, SessionId};
use rota_store::ConflictKind;
use rota_store::{Completion, CompletionRecorded};
use rusqlite::Connection;

const SET_PID: &str = "UPDATE attempts SET pid = ?2 WHERE id = ?1";
const SET_OUTPUTS: &str = "UPDATE attempts SET outputs = ?2 WHERE id = ?1";

/// Records the pid of a running attempt the session holds.
pub(crate) fn record_start(
    conn: &Connection,
    session: SessionId,
    attempt: AttemptId,
    pid: u32,
) -> Result<()> {
    let a = load_attempt(conn, attempt)?.ok_or_else(|| not_found(format!("attempt {attempt}")))?;
    check_held(&a, session)?;
    conn.prepare_cached(SET_PID)?.execute((attempt.0, i64::from(pid)))?;
    Ok(())
}

/// Records each completion; one that is refused changes nothing (`complete_one` checks
/// everything before its first write).
pub(crate) fn complete(
    conn: &Connection,
    items: Vec<Completion>,
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<CompletionRecorded>>> {
    items.iter().map(|c| unsaved_item(conn, |c2| complete_one(c2, c, now))).collect()
}

fn complete_one(conn: &Connection, c: &Completion, now: DateTime<Utc>) -> Result<CompletionRecorded> {
    let a =
        load_attempt(conn, c.attempt_id)?.ok_or_else(|| not_found(format!("attempt {}", c.attempt_id)))?;
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
    if let Some(outputs) = c.outputs_to_record() {
        conn.prepare_cached(SET_OUTPUTS)?.execute((a.id.0, crate::codec::to_json(outputs)?))?;
    }
    let settled = end_attempt(conn, &a, &c.outcome, c.run_ms, now, c.jitter01)?;
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
