//! Attempt rows as the write paths see them, and ending one: record its outcome, then let
//! [`crate::settle`] move its step and job. Shared by complete, lease expiry and worker
//! supersession; it must not choose outcomes itself.

use crate::codec::{from_json, jitter_for, job_id, ms, parse_name, session_id, to_json, u32_of};
use crate::error::Result;
use crate::jobs_read::opt_stop_cause;
use crate::settle::{Settled, settle};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, AttemptOutcome, AttemptStatus, JobId, LostCause, SessionId};
use rota_store::{LostAttempt, StopCause};
use rusqlite::{Connection, OptionalExtension, Params, Row};

const ATTEMPT_COLUMNS: &str = "id, job_id, step, number, session, status, outcome, stop_cause";

const SELECT_ATTEMPT: &str =
    "SELECT id, job_id, step, number, session, status, outcome, stop_cause FROM attempts WHERE id = ?1";

// With the worker's own run time (?6), the end is start + run time, bounded by now: a result
// that arrives late (server outage, retried delivery) does not stretch the step's duration.
const END_ATTEMPT: &str = "UPDATE attempts SET status = ?2, outcome = ?3, reason = ?4, \
     finished_at = CASE WHEN ?6 IS NULL THEN ?5 ELSE MAX(started_at, MIN(?5, started_at + ?6)) END, \
     lease_expires_at = NULL WHERE id = ?1";

/// What the write paths need of an attempt.
#[derive(Debug)]
pub(crate) struct AttemptRow {
    pub(crate) id: AttemptId,
    pub(crate) job_id: JobId,
    pub(crate) step: String,
    pub(crate) number: u32,
    pub(crate) session: SessionId,
    pub(crate) status: AttemptStatus,
    pub(crate) outcome: Option<AttemptOutcome>,
    pub(crate) stop_cause: Option<StopCause>,
}

/// One attempt, if it exists.
pub(crate) fn load_attempt(conn: &Connection, id: AttemptId) -> Result<Option<AttemptRow>> {
    let raw = conn.prepare_cached(SELECT_ATTEMPT)?.query_row([id.0], RawAttempt::read).optional()?;
    raw.map(RawAttempt::decode).transpose()
}

/// Attempts selected by `sql`, which must select [`ATTEMPT_COLUMNS`] in that order.
pub(crate) fn select_attempts(conn: &Connection, sql: &str, params: impl Params) -> Result<Vec<AttemptRow>> {
    debug_assert!(sql.contains(ATTEMPT_COLUMNS), "{sql}");
    let raws = conn
        .prepare_cached(sql)?
        .query_map(params, RawAttempt::read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawAttempt::decode).collect()
}

/// Records how a running attempt ended and applies its step's policy.
pub(crate) fn end_attempt(
    conn: &Connection,
    a: &AttemptRow,
    outcome: &AttemptOutcome,
    run_ms: Option<u64>,
    now: DateTime<Utc>,
    jitter01: f64,
) -> Result<Settled> {
    conn.prepare_cached(END_ATTEMPT)?.execute((
        a.id.0,
        outcome.status().as_str(),
        to_json(outcome)?,
        outcome.reason(),
        ms(now),
        run_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
    ))?;
    settle(conn, a, outcome, now, jitter01)
}

/// Marks a running attempt lost for `why` and applies the step's `on_lost`.
pub(crate) fn lose_attempt(
    conn: &Connection,
    a: &AttemptRow,
    why: &LostCause,
    now: DateTime<Utc>,
) -> Result<LostAttempt> {
    let outcome = why.outcome();
    let settled = end_attempt(conn, a, &outcome, None, now, jitter_for(a.id))?;
    Ok(LostAttempt {
        attempt_id: a.id,
        job_id: a.job_id,
        step: a.step.clone(),
        session: a.session,
        retried: settled.retried,
    })
}

struct RawAttempt {
    id: i64,
    job_id: String,
    step: String,
    number: i64,
    session: String,
    status: String,
    outcome: Option<String>,
    stop_cause: Option<String>,
}

impl RawAttempt {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            job_id: r.get(1)?,
            step: r.get(2)?,
            number: r.get(3)?,
            session: r.get(4)?,
            status: r.get(5)?,
            outcome: r.get(6)?,
            stop_cause: r.get(7)?,
        })
    }

    fn decode(self) -> Result<AttemptRow> {
        Ok(AttemptRow {
            id: AttemptId(self.id),
            job_id: job_id(&self.job_id)?,
            step: self.step,
            number: u32_of(self.number)?,
            session: session_id(&self.session)?,
            status: parse_name(&self.status)?,
            outcome: self.outcome.as_deref().map(from_json).transpose()?,
            stop_cause: opt_stop_cause(self.stop_cause)?,
        })
    }
}
