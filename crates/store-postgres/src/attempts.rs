//! Attempt rows as the write paths see them, and ending one: record its outcome, then let
//! [`crate::settle`] move its step and job. Shared by complete, lease expiry and worker
//! supersession; it must not choose outcomes itself. Whoever ends an attempt locks its job
//! row first, then reads the attempt: the attempt read is then current.

use crate::codec::{jitter_for, opt_stop_cause, parse_name, u32_of};
use crate::error::Result;
use crate::settle::{Settled, lock_job, settle};
use crate::tx::{Tx, exec, opt};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, AttemptOutcome, AttemptStatus, JobId, LostCause, SessionId};
use rota_store::{LostAttempt, StopCause};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

const SELECT_ATTEMPT: &str =
    "SELECT id, job_id, step, number, session, status, outcome, stop_cause FROM attempts WHERE id = $1";

// Still running (and, for lease expiry, still expired) once its job's row is locked.
const STILL_RUNNING: &str = "SELECT id, job_id, step, number, session, status, outcome, stop_cause \
     FROM attempts WHERE id = $1 AND status = 'running' AND ($2::timestamptz IS NULL OR lease_expires_at < $2)";

// With the worker's own run time ($6, ms), the end is start + run time, bounded by now: a
// result that arrives late (server outage, retried delivery) does not stretch the step.
const END_ATTEMPT: &str = "UPDATE attempts SET status = $2, outcome = $3, reason = $4, \
     finished_at = CASE WHEN $6::bigint IS NULL THEN $5 \
         ELSE GREATEST(started_at, LEAST($5, started_at + $6::bigint * interval '1 millisecond')) END, \
     lease_expires_at = NULL WHERE id = $1";

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

/// One attempt, if it exists (no lock).
pub(crate) async fn load_attempt(tx: &Tx<'_>, id: AttemptId) -> Result<Option<AttemptRow>> {
    opt(tx, SELECT_ATTEMPT, &[&id.0]).await?.as_ref().map(decode).transpose()
}

/// Records how a running attempt ended and applies its step's policy.
pub(crate) async fn end_attempt(
    tx: &Tx<'_>,
    a: &AttemptRow,
    outcome: &AttemptOutcome,
    run_ms: Option<u64>,
    now: DateTime<Utc>,
    jitter01: f64,
) -> Result<Settled> {
    let run_ms = run_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let reason = outcome.reason();
    // Sent in the same round trip as the settlement's reads (prepared first, so it goes out
    // first): it writes only the attempt row, which those reads do not look at.
    tx.prepare_cached(END_ATTEMPT).await?;
    let status = outcome.status().as_str();
    let outcome_json = Json(outcome);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&a.id.0, &status, &outcome_json, &reason, &now, &run_ms];
    let write = exec(tx, END_ATTEMPT, &params);
    settle(tx, a, outcome, now, jitter01, write).await
}

/// Marks a running attempt lost for `why` and applies the step's `on_lost`. The caller
/// locked the job row and read `a` after it.
pub(crate) async fn lose_attempt(
    tx: &Tx<'_>,
    a: &AttemptRow,
    why: &LostCause,
    now: DateTime<Utc>,
) -> Result<LostAttempt> {
    let outcome = why.outcome();
    let settled = end_attempt(tx, a, &outcome, None, now, jitter_for(a.id)).await?;
    Ok(LostAttempt {
        attempt_id: a.id,
        job_id: a.job_id,
        step: a.step.clone(),
        session: a.session,
        retried: settled.retried,
    })
}

/// Loses each listed attempt that is still running (with `lease_before`: whose lease still
/// ended before it) once its job row is locked. Jobs are locked in id order, so two
/// transactions never wait on each other's job rows.
pub(crate) async fn lose_all(
    tx: &Tx<'_>,
    mut ids: Vec<(JobId, AttemptId)>,
    why: &LostCause,
    now: DateTime<Utc>,
    lease_before: Option<DateTime<Utc>>,
) -> Result<Vec<LostAttempt>> {
    ids.sort();
    let mut out = Vec::new();
    for (job, id) in ids {
        match lock_job(tx, job).await {
            Ok(_) => {}
            Err(crate::error::Error::Store(_)) => continue, // pruned meanwhile
            Err(e) => return Err(e),
        }
        if let Some(r) = opt(tx, STILL_RUNNING, &[&id.0, &lease_before]).await? {
            out.push(lose_attempt(tx, &decode(&r)?, why, now).await?);
        }
    }
    out.sort_by_key(|l| l.attempt_id);
    Ok(out)
}

pub(crate) fn decode(r: &Row) -> Result<AttemptRow> {
    let outcome: Option<Json<AttemptOutcome>> = r.try_get(6)?;
    Ok(AttemptRow {
        id: AttemptId(r.try_get(0)?),
        job_id: JobId(r.try_get::<_, Uuid>(1)?),
        step: r.try_get(2)?,
        number: u32_of(i64::from(r.try_get::<_, i32>(3)?))?,
        session: SessionId(r.try_get::<_, Uuid>(4)?),
        status: parse_name(r.try_get(5)?)?,
        outcome: outcome.map(|Json(o)| o),
        stop_cause: opt_stop_cause(r.try_get(7)?)?,
    })
}
