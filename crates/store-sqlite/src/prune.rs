//! Retention: which finished jobs are old enough to delete, and deleting them (steps and
//! attempts follow by foreign key). Their logs live in the other file and are deleted by
//! [`crate::logs::delete_jobs`] first, so a crash in between never orphans log chunks.

use crate::codec::ms;
use crate::error::Result;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

// `+state` keeps the planner on the finished_at index.
const FINISHED_BEFORE: &str = "SELECT id FROM jobs WHERE finished_at < ?1 \
     AND +state IN ('succeeded', 'failed', 'cancelled', 'revoked')";

// The condition is checked again: a job may have been retried since it was selected.
const DELETE_JOBS: &str = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) \
     AND finished_at < ?2 AND state IN ('succeeded', 'failed', 'cancelled', 'revoked')";

// Superseded sessions that ended before the cutoff; every name keeps its latest session.
const DELETE_OLD_SESSIONS: &str = "DELETE FROM workers WHERE status = 'offline' AND last_heartbeat_at < ?1 \
     AND session <> (SELECT w2.session FROM workers w2 WHERE w2.name = workers.name \
         ORDER BY w2.registered_at DESC, w2.session DESC LIMIT 1)";

/// Ids of the jobs that ended before `before`.
pub(crate) fn finished_before(conn: &Connection, before: DateTime<Utc>) -> Result<Vec<String>> {
    let ids = conn
        .prepare_cached(FINISHED_BEFORE)?
        .query_map([ms(before)], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Deletes the listed jobs that still qualify, and old superseded sessions. Returns how
/// many jobs were deleted.
pub(crate) fn delete_jobs(conn: &Connection, ids_json: &str, before: DateTime<Utc>) -> Result<u64> {
    let n = conn.prepare_cached(DELETE_JOBS)?.execute((ids_json, ms(before)))?;
    conn.prepare_cached(DELETE_OLD_SESSIONS)?.execute([ms(before)])?;
    Ok(n as u64)
}
