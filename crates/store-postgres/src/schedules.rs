//! The `schedule_fires` table (migration 4): each fire time of a schedule recorded once,
//! a run together with its job in one transaction. Several servers may record one fire time
//! at once (a leader change): the fire row is inserted first (`ON CONFLICT DO NOTHING`,
//! which waits for a concurrent insert of the same key to commit or roll back), and only
//! the transaction whose insert took the row stores the job, so a fire time never starts
//! two. Which fire times are due is not decided here.

use crate::error::Result;
use crate::tx::{Tx, exec, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::JobId;
use rota_domain::schedule::FireOutcome;
use rota_store::StoreError;
use rota_store::schedules::{FireFilter, FireRecord, NewFire, NewOutcome, check_fires};
use tokio_postgres::Row;

const COLUMNS: &str = "schedule, fire_time, outcome, job_id, recorded_at, namespace";

const INSERT: &str = "INSERT INTO schedule_fires (schedule, fire_time, outcome, job_id, recorded_at, namespace) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, schedule, fire_time) DO NOTHING";

const SET_JOB: &str =
    "UPDATE schedule_fires SET job_id = $3 WHERE namespace = $4 AND schedule = $1 AND fire_time = $2";

fn decode(r: &Row, created: bool) -> Result<FireRecord> {
    let outcome: &str = r.try_get(2)?;
    Ok(FireRecord {
        namespace: r.try_get(5)?,
        schedule: r.try_get(0)?,
        fire_time: r.try_get(1)?,
        outcome: FireOutcome::parse(outcome)
            .ok_or_else(|| StoreError::Invalid(format!("stored fire outcome `{outcome}` is not known")))?,
        job_id: r.try_get::<_, Option<uuid::Uuid>>(3)?.map(JobId),
        recorded_at: r.try_get(4)?,
        created,
    })
}

/// Records each fire not recorded yet (a run with its job), in the caller's transaction.
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    fires: Vec<NewFire>,
    now: DateTime<Utc>,
) -> Result<Vec<FireRecord>> {
    check_fires(&fires)?;
    let find = format!(
        "SELECT {COLUMNS} FROM schedule_fires WHERE namespace = $3 AND schedule = $1 AND fire_time = $2"
    );
    let mut out = Vec::with_capacity(fires.len());
    for f in fires {
        let outcome = f.outcome.outcome();
        let planned: Option<uuid::Uuid> = match &f.outcome {
            NewOutcome::Run(job) => Some(job.id.0),
            NewOutcome::Skipped | NewOutcome::Missed => None,
        };
        let took =
            exec(tx, INSERT, &[&f.schedule, &f.fire_time, &outcome.as_str(), &planned, &now, &f.namespace])
                .await?
                == 1;
        if !took {
            let row = opt(tx, &find, &[&f.schedule, &f.fire_time, &f.namespace]).await?.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "schedule {} fire {}: neither inserted nor found",
                    f.schedule, f.fire_time
                ))
            })?;
            out.push(decode(&row, false)?);
            continue;
        }
        let mut job_id = planned.map(JobId);
        if let NewOutcome::Run(job) = f.outcome {
            let submitted = crate::submit::submit_jobs(tx, std::slice::from_ref(&*job))
                .await?
                .pop()
                .ok_or_else(|| StoreError::Invalid("the store returned no submit result".into()))?
                .map_err(|e| {
                    StoreError::Invalid(format!("schedule {} fire {}: {e}", f.schedule, f.fire_time))
                })?;
            // A job already stored under the fire's key (started before its fire could be
            // recorded) is the fire's job: never a second one.
            if submitted.id != job.id {
                exec(tx, SET_JOB, &[&f.schedule, &f.fire_time, &submitted.id.0, &f.namespace]).await?;
            }
            job_id = Some(submitted.id);
        }
        out.push(FireRecord {
            namespace: f.namespace,
            schedule: f.schedule,
            fire_time: f.fire_time,
            outcome,
            job_id,
            recorded_at: now,
            created: true,
        });
    }
    Ok(out)
}

/// The fires of `schedule` that `filter` admits, newest first.
pub(crate) async fn list(
    tx: &Tx<'_>,
    namespace: &str,
    schedule: &str,
    filter: FireFilter,
    limit: u32,
) -> Result<Vec<FireRecord>> {
    let (runs, not_run) = filter.flags();
    let sql = format!(
        "SELECT {COLUMNS} FROM schedule_fires WHERE namespace = $5 AND schedule = $1 \
         AND (($2 AND outcome = 'run') OR ($3 AND outcome <> 'run')) \
         ORDER BY fire_time DESC LIMIT $4"
    );
    rows(tx, &sql, &[&schedule, &runs, &not_run, &i64::from(limit), &namespace])
        .await?
        .iter()
        .map(|r| decode(r, false))
        .collect()
}

/// Deletes up to one chunk of fires recorded before `before`, never a schedule's newest.
pub(crate) async fn prune(tx: &Tx<'_>, before: DateTime<Utc>, chunk: u32) -> Result<u64> {
    exec(tx, PRUNE, &[&before, &i64::from(chunk)]).await
}

const PRUNE: &str = "DELETE FROM schedule_fires WHERE (namespace, schedule, fire_time) IN ( \
     SELECT f.namespace, f.schedule, f.fire_time FROM schedule_fires f WHERE f.recorded_at < $1 \
     AND f.fire_time < (SELECT MAX(g.fire_time) FROM schedule_fires g \
         WHERE g.namespace = f.namespace AND g.schedule = f.schedule) LIMIT $2)";
