//! The total log quota's pruning: which finished jobs' logs go first (oldest finished
//! first, a read of both files) and deleting them while recording what each attempt lost.
//! Refusing new chunks once nothing is left to prune is `logs::append`'s part.

use crate::error::Result;
use crate::logs::live_bytes;
use rusqlite::Connection;

/// Live bytes per job that still has any, on the logs database. Read only under quota
/// pressure: it scans `log_attempts`.
const JOBS_WITH_LOGS: &str =
    "SELECT job_id, SUM(bytes_kept) FROM log_attempts WHERE bytes_kept > 0 GROUP BY job_id";

/// On the main database: of the listed jobs, the finished ones, oldest finished first.
const FINISHED_OLDEST_FIRST: &str = "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) \
     AND finished_at IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled', 'revoked') \
     ORDER BY finished_at, id";

const RECORD_PRUNED: &str = "UPDATE log_attempts SET bytes_pruned = bytes_pruned + bytes_kept, bytes_kept = 0 \
     WHERE job_id IN (SELECT value FROM json_each(?1)) AND bytes_kept > 0";

const DELETE_CHUNKS: &str = "DELETE FROM log_chunks WHERE job_id IN (SELECT value FROM json_each(?1))";

/// On the logs database: every job with live log bytes, and how many.
pub(crate) fn jobs_with_logs(conn: &Connection) -> Result<Vec<(String, u64)>> {
    let rows = conn
        .prepare_cached(JOBS_WITH_LOGS)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// On the main database: the finished jobs among `ids_json` (a JSON array), oldest first.
pub(crate) fn finished_oldest_first(conn: &Connection, ids_json: &str) -> Result<Vec<String>> {
    let ids = conn
        .prepare_cached(FINISHED_OLDEST_FIRST)?
        .query_map([ids_json], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// On the logs database: deletes every chunk of the listed jobs, recording the bytes on
/// their attempts (`bytes_pruned`, shown with the job's logs). Returns (freed, live after).
pub(crate) fn prune_jobs(conn: &Connection, ids_json: &str) -> Result<(u64, u64)> {
    let before = live_bytes(conn)?;
    conn.prepare_cached(RECORD_PRUNED)?.execute([ids_json])?;
    conn.prepare_cached(DELETE_CHUNKS)?.execute([ids_json])?;
    let after = live_bytes(conn)?;
    Ok((before.saturating_sub(after), after))
}
