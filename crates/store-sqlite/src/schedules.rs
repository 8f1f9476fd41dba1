//! The `schedule_fires` table (migration 9): each fire time of a schedule recorded once,
//! a run together with its job (one writer op: the fire row and the job commit together or
//! not at all). The writer thread serializes recorders, so "already recorded" is decided
//! here by reading; the primary key backs it. Which fire times are due is not decided here.

use crate::codec::{job_id, ms, time};
use crate::error::Result;
use chrono::{DateTime, Utc};
use rota_domain::schedule::FireOutcome;
use rota_store::StoreError;
use rota_store::schedules::{FireFilter, FireRecord, NewFire, NewOutcome, check_fires};
use rusqlite::{Connection, OptionalExtension, Row};

const COLUMNS: &str = "schedule, fire_time, outcome, job_id, recorded_at, namespace";

const INSERT: &str = "INSERT INTO schedule_fires (schedule, fire_time, outcome, job_id, recorded_at, namespace) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

type RawRow = (String, i64, String, Option<String>, i64, String);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn decode(row: RawRow, created: bool) -> Result<FireRecord> {
    let (schedule, fire_time, outcome, job, recorded_at, namespace) = row;
    Ok(FireRecord {
        namespace,
        schedule,
        fire_time: time(fire_time)?,
        outcome: FireOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Invalid(format!("stored fire outcome `{outcome}` is not known")))?,
        job_id: job.as_deref().map(job_id).transpose()?,
        recorded_at: time(recorded_at)?,
        created,
    })
}

/// Records each fire not recorded yet (a run with its job); the caller's op savepoint makes
/// the batch one change.
pub(crate) fn record(conn: &Connection, fires: Vec<NewFire>, now: DateTime<Utc>) -> Result<Vec<FireRecord>> {
    check_fires(&fires)?;
    let find = format!(
        "SELECT {COLUMNS} FROM schedule_fires WHERE namespace = ?3 AND schedule = ?1 AND fire_time = ?2"
    );
    let mut out = Vec::with_capacity(fires.len());
    for f in fires {
        if let Some(row) = conn
            .prepare_cached(&find)?
            .query_row((&f.schedule, ms(f.fire_time), &f.namespace), raw)
            .optional()?
        {
            out.push(decode(row, false)?);
            continue;
        }
        let outcome = f.outcome.outcome();
        let job = match f.outcome {
            // A job already stored under the fire's key (a run started before its fire
            // could be recorded) is the fire's job: never a second one.
            NewOutcome::Run(job) => Some(crate::submit::submit_one(conn, &job)?.id),
            NewOutcome::Skipped | NewOutcome::Missed => None,
        };
        conn.prepare_cached(INSERT)?.execute((
            &f.schedule,
            ms(f.fire_time),
            outcome.as_str(),
            job.map(|j| j.to_string()),
            ms(now),
            &f.namespace,
        ))?;
        out.push(FireRecord {
            namespace: f.namespace,
            schedule: f.schedule,
            fire_time: f.fire_time,
            outcome,
            job_id: job,
            recorded_at: now,
            created: true,
        });
    }
    Ok(out)
}

/// The fires of `schedule` that `filter` admits, newest first.
pub(crate) fn list(
    conn: &Connection,
    namespace: &str,
    schedule: &str,
    filter: FireFilter,
    limit: u32,
) -> Result<Vec<FireRecord>> {
    let (runs, not_run) = filter.flags();
    let sql = format!(
        "SELECT {COLUMNS} FROM schedule_fires WHERE namespace = ?5 AND schedule = ?1 \
         AND ((?2 AND outcome = 'run') OR (?3 AND outcome <> 'run')) \
         ORDER BY fire_time DESC LIMIT ?4"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map((schedule, runs, not_run, i64::from(limit), namespace), raw)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|r| decode(r, false)).collect()
}

/// Deletes up to one chunk of fires recorded before `before`, never a schedule's newest.
pub(crate) fn prune(conn: &Connection, before: DateTime<Utc>, chunk: u32) -> Result<u64> {
    let n = conn.prepare_cached(PRUNE)?.execute((ms(before), i64::from(chunk)))?;
    Ok(n as u64)
}

const PRUNE: &str = "DELETE FROM schedule_fires WHERE (namespace, schedule, fire_time) IN ( \
     SELECT f.namespace, f.schedule, f.fire_time FROM schedule_fires f WHERE f.recorded_at < ?1 \
     AND f.fire_time < (SELECT MAX(g.fire_time) FROM schedule_fires g \
         WHERE g.namespace = f.namespace AND g.schedule = f.schedule) LIMIT ?2)";
