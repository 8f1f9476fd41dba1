//! Retention: which finished jobs are old enough to delete, and deleting them (steps and
//! attempts follow by foreign key) with their logs, in small transactions. Old superseded
//! worker sessions go too; every name keeps its latest session.

use crate::error::Result;
use crate::tx::{Tx, exec, rows};
use chrono::{DateTime, Utc};
use uuid::Uuid;

const FINISHED_BEFORE: &str = "SELECT id FROM jobs WHERE finished_at < $1 \
     AND state IN ('succeeded', 'failed', 'cancelled', 'revoked') ORDER BY finished_at LIMIT $2";

// The condition is checked again: a job may have been retried since it was selected.
const DELETE_JOBS: &str = "DELETE FROM jobs WHERE id = ANY($1) \
     AND finished_at < $2 AND state IN ('succeeded', 'failed', 'cancelled', 'revoked') RETURNING id";

const DELETE_LOG_CHUNKS: &str = "DELETE FROM log_chunks WHERE job_id = ANY($1)";
const DELETE_LOG_ATTEMPTS: &str = "DELETE FROM log_attempts WHERE job_id = ANY($1)";

const DELETE_OLD_SESSIONS: &str = "DELETE FROM workers w WHERE w.status = 'offline' AND w.last_heartbeat_at < $1 \
     AND w.session <> (SELECT w2.session FROM workers w2 WHERE w2.name = w.name \
         ORDER BY w2.registered_at DESC, w2.session DESC LIMIT 1)";

/// Up to `limit` ids of jobs that ended before `before`.
pub(crate) async fn finished_before(tx: &Tx<'_>, before: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>> {
    rows(tx, FINISHED_BEFORE, &[&before, &limit]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Deletes the listed jobs that still qualify, with their logs. Returns how many jobs.
pub(crate) async fn delete_jobs(tx: &Tx<'_>, ids: &[Uuid], before: DateTime<Utc>) -> Result<u64> {
    let deleted: Vec<Uuid> = rows(tx, DELETE_JOBS, &[&ids, &before])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    exec(tx, DELETE_LOG_CHUNKS, &[&deleted]).await?;
    exec(tx, DELETE_LOG_ATTEMPTS, &[&deleted]).await?;
    Ok(deleted.len() as u64)
}

/// Deletes sessions that went offline before `before`, except each name's latest.
pub(crate) async fn delete_old_sessions(tx: &Tx<'_>, before: DateTime<Utc>) -> Result<u64> {
    exec(tx, DELETE_OLD_SESSIONS, &[&before]).await
}
