//! Reading jobs back: one job with its steps and attempts, and filtered listings. Used by
//! reads and, for the rows writes return, inside write transactions. No writes.

use crate::codec::{parse_name, u32_of};
use crate::error::{Result, not_found};
use crate::tx::{Tx, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, JobSpec, JobState, SessionId, StepState, Target};
use rota_store::{
    AttemptRecord, FinishedMinute, JobFilter, JobRecord, JobRow, LatencyMinute, StepCountsRecord, StepRecord,
    Throughput,
};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

// Both job queries select the columns `job_row` decodes, in that order, step counts
// included (one statement per listing, not one per job).
const JOB_COLUMNS: &str = "SELECT j.id, j.name, j.queue, j.priority, j.target_host, j.target_tags, j.state, \
     j.reason, j.created_at, j.finished_at, c.total, c.succeeded, c.running, c.failed, j.namespace FROM jobs j \
     CROSS JOIN LATERAL (SELECT COUNT(*) AS total, \
         COUNT(*) FILTER (WHERE state = 'succeeded') AS succeeded, \
         COUNT(*) FILTER (WHERE state = 'running') AS running, \
         COUNT(*) FILTER (WHERE state IN ('failed', 'cancelled', 'revoked', 'skipped')) AS failed \
       FROM steps WHERE job_id = j.id) c";

const SELECT_SPEC: &str = "SELECT spec FROM jobs WHERE id = $1";

const SELECT_STEPS: &str = "SELECT name, state, reason, run_after FROM steps WHERE job_id = $1 ORDER BY idx";

const SELECT_ATTEMPTS: &str = "SELECT id, step, number, session, worker_name, status, outcome, reason, pid, \
     started_at, finished_at, lease_expires_at, outputs FROM attempts WHERE job_id = $1 ORDER BY step, number";

/// The listing row of one job. `NotFound` if it does not exist.
pub(crate) async fn load_row(tx: &Tx<'_>, id: JobId) -> Result<JobRow> {
    let sql = format!("{JOB_COLUMNS} WHERE j.id = $1");
    let r = opt(tx, &sql, &[&id.0]).await?.ok_or_else(|| not_found(format!("job {id}")))?;
    job_row(&r)
}

/// The stored document of one job. `NotFound` if it does not exist.
pub(crate) async fn load_spec(tx: &Tx<'_>, id: JobId) -> Result<JobSpec> {
    let r = opt(tx, SELECT_SPEC, &[&id.0]).await?.ok_or_else(|| not_found(format!("job {id}")))?;
    let Json(spec): Json<JobSpec> = r.try_get(0)?;
    Ok(spec)
}

/// One job with its steps (document order) and their attempts (oldest first).
pub(crate) async fn get_job(tx: &Tx<'_>, id: JobId) -> Result<JobRecord> {
    let row = load_row(tx, id).await?;
    let spec = load_spec(tx, id).await?;
    let mut steps = Vec::new();
    for r in rows(tx, SELECT_STEPS, &[&id.0]).await? {
        steps.push(StepRecord {
            name: r.try_get(0)?,
            state: parse_name::<StepState>(r.try_get(1)?)?,
            reason: r.try_get(2)?,
            run_after: r.try_get(3)?,
            attempts: Vec::new(),
        });
    }
    for r in rows(tx, SELECT_ATTEMPTS, &[&id.0]).await? {
        let step: String = r.try_get(1)?;
        let attempt = read_attempt(&r)?;
        if let Some(s) = steps.iter_mut().find(|s| s.name == step) {
            s.attempts.push(attempt);
        }
    }
    Ok(JobRecord { row, spec, steps })
}

/// Jobs matching `filter`, newest first.
pub(crate) async fn list_jobs(tx: &Tx<'_>, filter: &JobFilter) -> Result<Vec<JobRow>> {
    let states: Option<Vec<&str>> =
        (!filter.states.is_empty()).then(|| filter.states.iter().map(|s| s.as_str()).collect());
    let limit = i64::from(filter.limit);
    let sql = format!(
        "{JOB_COLUMNS} WHERE ($1::text[] IS NULL OR j.state = ANY($1)) AND ($2::text IS NULL OR j.queue = $2) \
         AND ($4::text IS NULL OR j.namespace = $4) AND ($5::text IS NULL OR strpos(j.name, $5) > 0) \
         AND ($6::text IS NULL OR starts_with(j.idempotency_key, $6)) AND ($7::uuid IS NULL OR j.id < $7) \
         ORDER BY j.id DESC LIMIT $3"
    );
    let schedule = filter.schedule.as_deref().map(rota_store::schedules::fire_key_prefix);
    let before = filter.before.map(|b| b.0);
    rows(tx, &sql, &[&states, &filter.queue, &limit, &filter.namespace, &filter.name, &schedule, &before])
        .await?
        .iter()
        .map(job_row)
        .collect()
}

/// Jobs ended per minute and state since $1.
const FINISHED_PER_MINUTE: &str = "SELECT date_trunc('minute', finished_at) AS m, state, COUNT(*) FROM jobs \
     WHERE finished_at >= $1 AND ($2::text IS NULL OR namespace = $2) GROUP BY m, state ORDER BY m, state";

/// Submit→start per minute of first start, for jobs submitted since $1 (ids of at least $3,
/// the smallest UUID v7 of that millisecond, so the primary key bounds the scan).
const LATENCY_PER_MINUTE: &str = "SELECT date_trunc('minute', s) AS m, COUNT(*), \
     AVG(EXTRACT(EPOCH FROM (s - c)) * 1000)::float8, MAX(EXTRACT(EPOCH FROM (s - c)) * 1000)::float8 FROM ( \
       SELECT j.created_at AS c, MIN(a.started_at) AS s FROM jobs j JOIN attempts a ON a.job_id = j.id \
       WHERE j.id >= $3 AND j.created_at >= $1 AND ($2::text IS NULL OR j.namespace = $2) GROUP BY j.id) t \
     GROUP BY m ORDER BY m";

/// Jobs ended and started per minute since `since`.
pub(crate) async fn throughput(
    tx: &Tx<'_>,
    since: DateTime<Utc>,
    namespace: Option<&str>,
) -> Result<Throughput> {
    let mut out = Throughput::default();
    for r in rows(tx, FINISHED_PER_MINUTE, &[&since, &namespace]).await? {
        out.finished.push(FinishedMinute {
            minute: r.try_get(0)?,
            state: parse_name::<JobState>(r.try_get(1)?)?,
            jobs: u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
        });
    }
    let low = JobId::first_at(
        u64::try_from(since.timestamp_millis())
            .unwrap_or(0)
            .saturating_sub(rota_domain::ids::ID_CLOCK_SLACK_MS),
    )
    .0;
    for r in rows(tx, LATENCY_PER_MINUTE, &[&since, &namespace, &low]).await? {
        let max: f64 = r.try_get(3)?;
        out.latency.push(LatencyMinute {
            minute: r.try_get(0)?,
            started: u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
            mean_ms: r.try_get::<_, f64>(2)?.max(0.0),
            // Whole milliseconds: a float of a non-negative duration, rounded.
            max_ms: max.max(0.0).round() as u64,
        });
    }
    Ok(out)
}

fn read_attempt(r: &Row) -> Result<AttemptRecord> {
    let outcome: Option<Json<rota_domain::AttemptOutcome>> = r.try_get(6)?;
    let pid: Option<i64> = r.try_get(8)?;
    Ok(AttemptRecord {
        id: AttemptId(r.try_get(0)?),
        number: u32_of(i64::from(r.try_get::<_, i32>(2)?))?,
        session: SessionId(r.try_get::<_, Uuid>(3)?),
        worker: r.try_get(4)?,
        status: parse_name(r.try_get(5)?)?,
        outcome: outcome.map(|Json(o)| o),
        reason: r.try_get(7)?,
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        started_at: r.try_get(9)?,
        finished_at: r.try_get(10)?,
        lease_expires_at: r.try_get(11)?,
        outputs: match r.try_get::<_, Option<&str>>(12)? {
            Some(text) => serde_json::from_str(text)?,
            None => Default::default(),
        },
    })
}

/// Decodes a row of [`JOB_COLUMNS`].
fn job_row(r: &Row) -> Result<JobRow> {
    let id: Uuid = r.try_get(0)?;
    let count = |i| r.try_get::<_, i64>(i).map_err(crate::error::Error::from).and_then(u32_of);
    Ok(JobRow {
        id: JobId(id),
        namespace: r.try_get(14)?,
        name: r.try_get(1)?,
        queue: r.try_get(2)?,
        priority: r.try_get(3)?,
        target: Target { host: r.try_get(4)?, tags: r.try_get(5)? },
        state: parse_name::<JobState>(r.try_get(6)?)?,
        reason: r.try_get(7)?,
        counts: StepCountsRecord {
            total: count(10)?,
            succeeded: count(11)?,
            running: count(12)?,
            failed: count(13)?,
        },
        created_at: r.try_get(8)?,
        finished_at: r.try_get(9)?,
    })
}
