//! Reading jobs back: one job with its steps and attempts, and filtered listings. Used by
//! the reader pool and, for the rows writes return, inside write transactions. No writes.

use crate::codec::{from_json, job_id, opt_time, parse_name, session_id, stop_cause, time, to_json, u32_of};
use crate::error::{Result, not_found};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, JobSpec, JobState, StepState, Target};
use rota_store::{
    AttemptRecord, FinishedMinute, JobFilter, JobRecord, JobRow, LatencyMinute, StepCountsRecord, StepRecord,
    StopCause, Throughput,
};
use rusqlite::{Connection, OptionalExtension, Row};

// Both job queries select the columns `RawRow::read` decodes, in that order.
const SELECT_JOB: &str = "SELECT id, name, queue, priority, target_host, target_tags, state, reason, \
     created_at, finished_at, namespace FROM jobs WHERE id = ?1";

const SELECT_SPEC: &str = "SELECT spec FROM jobs WHERE id = ?1";

pub(crate) const LIST_JOBS: &str =
    "SELECT id, name, queue, priority, target_host, target_tags, state, reason, \
     created_at, finished_at, namespace FROM jobs
     WHERE (?1 IS NULL OR state IN (SELECT value FROM json_each(?1)))
       AND (?2 IS NULL OR queue = ?2)
       AND (?4 IS NULL OR namespace = ?4)
       AND (?5 IS NULL OR instr(name, ?5) > 0)
       AND (?6 IS NULL OR substr(idempotency_key, 1, length(?6)) = ?6)
       AND (?7 IS NULL OR id < ?7)
     ORDER BY id DESC LIMIT ?3";

/// Jobs ended per minute and state since ?1 (ms).
const FINISHED_PER_MINUTE: &str = "SELECT finished_at / 60000 AS m, state, COUNT(*) FROM jobs
     WHERE finished_at >= ?1 AND (?2 IS NULL OR namespace = ?2)
     GROUP BY m, state ORDER BY m, state";

/// Submit→start per minute of first start, for jobs submitted since ?1 (their ids are at
/// least ?3, the smallest UUID v7 of that millisecond, so the primary key bounds the scan).
const LATENCY_PER_MINUTE: &str = "SELECT s / 60000 AS m, COUNT(*), AVG(s - c), MAX(s - c) FROM (
       SELECT j.created_at AS c, MIN(a.started_at) AS s FROM jobs j JOIN attempts a ON a.job_id = j.id
       WHERE j.id >= ?3 AND j.created_at >= ?1 AND (?2 IS NULL OR j.namespace = ?2)
       GROUP BY j.id)
     GROUP BY m ORDER BY m";

const STEP_COUNTS: &str = "SELECT COUNT(*),
       COALESCE(SUM(state = 'succeeded'), 0),
       COALESCE(SUM(state = 'running'), 0),
       COALESCE(SUM(state IN ('failed', 'cancelled', 'revoked', 'skipped')), 0)
     FROM steps WHERE job_id = ?1";

const SELECT_STEPS: &str = "SELECT name, state, reason, run_after FROM steps WHERE job_id = ?1 ORDER BY idx";

const SELECT_ATTEMPTS: &str = "SELECT id, step, number, session, worker_name, status, outcome, reason, pid, \
     started_at, finished_at, lease_expires_at, outputs FROM attempts WHERE job_id = ?1 ORDER BY step, number";

/// The listing row of one job. `NotFound` if it does not exist.
pub(crate) fn load_row(conn: &Connection, id: JobId) -> Result<JobRow> {
    let raw = conn
        .prepare_cached(SELECT_JOB)?
        .query_row([id.to_string()], RawRow::read)
        .optional()?
        .ok_or_else(|| not_found(format!("job {id}")))?;
    raw.into_row(conn)
}

/// The stored document of one job. `NotFound` if it does not exist.
pub(crate) fn load_spec(conn: &Connection, id: JobId) -> Result<JobSpec> {
    from_json(&load_spec_text(conn, id)?)
}

/// The stored document of one job as its JSON text. `NotFound` if it does not exist.
pub(crate) fn load_spec_text(conn: &Connection, id: JobId) -> Result<String> {
    conn.prepare_cached(SELECT_SPEC)?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found(format!("job {id}")))
}

/// One job with its steps (document order) and their attempts (oldest first).
pub(crate) fn get_job(conn: &Connection, id: JobId) -> Result<JobRecord> {
    let row = load_row(conn, id)?;
    let spec = load_spec(conn, id)?;
    let mut steps = Vec::new();
    let mut st = conn.prepare_cached(SELECT_STEPS)?;
    let mut rows = st.query([id.to_string()])?;
    while let Some(r) = rows.next()? {
        steps.push(StepRecord {
            name: r.get(0)?,
            state: parse_name::<StepState>(&r.get::<_, String>(1)?)?,
            reason: r.get(2)?,
            run_after: opt_time(r.get(3)?)?,
            attempts: Vec::new(),
        });
    }
    let mut st = conn.prepare_cached(SELECT_ATTEMPTS)?;
    let mut rows = st.query([id.to_string()])?;
    while let Some(r) = rows.next()? {
        let step: String = r.get(1)?;
        let attempt = read_attempt(r)?;
        if let Some(s) = steps.iter_mut().find(|s| s.name == step) {
            s.attempts.push(attempt);
        }
    }
    Ok(JobRecord { row, spec, steps })
}

/// Jobs matching `filter`, newest first.
pub(crate) fn list_jobs(conn: &Connection, filter: &JobFilter) -> Result<Vec<JobRow>> {
    let states = if filter.states.is_empty() {
        None
    } else {
        Some(to_json(&filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>())?)
    };
    let mut st = conn.prepare_cached(LIST_JOBS)?;
    let raws = st
        .query_map(
            (
                states,
                filter.queue.as_deref(),
                i64::from(filter.limit),
                filter.namespace.as_deref(),
                filter.name.as_deref(),
                filter.schedule.as_deref().map(rota_store::schedules::fire_key_prefix),
                filter.before.map(|b| b.to_string()),
            ),
            RawRow::read,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(|raw| raw.into_row(conn)).collect()
}

/// Jobs ended and started per minute since `since`.
pub(crate) fn throughput(
    conn: &Connection,
    since: DateTime<Utc>,
    namespace: Option<&str>,
) -> Result<Throughput> {
    let from = since.timestamp_millis();
    let mut out = Throughput::default();
    let mut st = conn.prepare_cached(FINISHED_PER_MINUTE)?;
    let mut rows = st.query((from, namespace))?;
    while let Some(r) = rows.next()? {
        out.finished.push(FinishedMinute {
            minute: time(r.get::<_, i64>(0)? * 60_000)?,
            state: parse_name::<JobState>(&r.get::<_, String>(1)?)?,
            jobs: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        });
    }
    let low =
        JobId::first_at(u64::try_from(from).unwrap_or(0).saturating_sub(rota_domain::ids::ID_CLOCK_SLACK_MS))
            .to_string();
    let mut st = conn.prepare_cached(LATENCY_PER_MINUTE)?;
    let mut rows = st.query((from, namespace, low))?;
    while let Some(r) = rows.next()? {
        out.latency.push(LatencyMinute {
            minute: time(r.get::<_, i64>(0)? * 60_000)?,
            started: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            mean_ms: r.get::<_, f64>(2)?.max(0.0),
            max_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        });
    }
    Ok(out)
}

fn read_attempt(r: &Row<'_>) -> Result<AttemptRecord> {
    let outcome: Option<String> = r.get(6)?;
    let pid: Option<i64> = r.get(8)?;
    Ok(AttemptRecord {
        id: AttemptId(r.get(0)?),
        number: u32_of(r.get(2)?)?,
        session: session_id(&r.get::<_, String>(3)?)?,
        worker: r.get(4)?,
        status: parse_name(&r.get::<_, String>(5)?)?,
        outcome: outcome.as_deref().map(from_json).transpose()?,
        reason: r.get(7)?,
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        started_at: time(r.get(9)?)?,
        finished_at: opt_time(r.get(10)?)?,
        lease_expires_at: opt_time(r.get(11)?)?,
        outputs: r.get::<_, Option<String>>(12)?.as_deref().map(from_json).transpose()?.unwrap_or_default(),
    })
}

/// Parses a nullable stored stop cause.
pub(crate) fn opt_stop_cause(s: Option<String>) -> Result<Option<StopCause>> {
    s.as_deref().map(stop_cause).transpose()
}

/// The job columns as read, before decoding (so decoding errors are ours, not the driver's).
struct RawRow {
    id: String,
    name: Option<String>,
    queue: String,
    priority: i32,
    target_host: Option<String>,
    target_tags: String,
    state: String,
    reason: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
    namespace: String,
}

impl RawRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            queue: r.get(2)?,
            priority: r.get(3)?,
            target_host: r.get(4)?,
            target_tags: r.get(5)?,
            state: r.get(6)?,
            reason: r.get(7)?,
            created_at: r.get(8)?,
            finished_at: r.get(9)?,
            namespace: r.get(10)?,
        })
    }

    fn into_row(self, conn: &Connection) -> Result<JobRow> {
        let counts = conn.prepare_cached(STEP_COUNTS)?.query_row([&self.id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })?;
        Ok(JobRow {
            id: job_id(&self.id)?,
            namespace: self.namespace,
            name: self.name,
            queue: self.queue,
            priority: self.priority,
            target: Target { host: self.target_host, tags: from_json(&self.target_tags)? },
            state: parse_name::<JobState>(&self.state)?,
            reason: self.reason,
            counts: StepCountsRecord {
                total: u32_of(counts.0)?,
                succeeded: u32_of(counts.1)?,
                running: u32_of(counts.2)?,
                failed: u32_of(counts.3)?,
            },
            created_at: time(self.created_at)?,
            finished_at: opt_time(self.finished_at)?,
        })
    }
}
