//! Log chunks, in their own database file: checking that the sender holds the attempt (a
//! read of the main database), appending with dedupe on (attempt, stream, seq), the per-
//! attempt cap that keeps the tail, the total quota's refusal of new chunks, paged reads
//! and pruning. Never touches job tables (which jobs the quota prunes is `quota.rs`).

use crate::codec::{i64_of, job_id, parse_name, session_id, u32_of};
use crate::error::{Result, conflict};
use crate::writer::in_savepoint;
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{AttemptId, AttemptStatus, JobId, Stream};
use rota_store::ConflictKind;
use rota_store::{LogAppend, LogCut, LogPage, LogQuery, StoredChunk};
use rusqlite::{Connection, OptionalExtension};

/// Most chunks in one page, however small they are.
const MAX_PAGE_CHUNKS: usize = 10_000;

const HOLDER: &str = "SELECT a.job_id, a.step, a.session, a.status, a.number, s.log_cap \
     FROM attempts a JOIN steps s ON s.job_id = a.job_id AND s.name = a.step WHERE a.id = ?1";

const INSERT_CHUNK: &str = "INSERT OR IGNORE INTO log_chunks \
     (job_id, step, attempt_id, attempt_number, stream, seq, size, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

// bytes_dropped is a running total reported by the worker: the largest one wins, so a
// resent or reordered append never counts twice.
const ADD_KEPT: &str = "INSERT INTO log_attempts \
     (attempt_id, job_id, step, bytes_kept, bytes_refused, bytes_dropped) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (attempt_id) DO UPDATE SET bytes_kept = bytes_kept + excluded.bytes_kept, \
     bytes_refused = bytes_refused + excluded.bytes_refused, \
     bytes_dropped = MAX(bytes_dropped, excluded.bytes_dropped)";

const LIVE: &str = "SELECT live_bytes FROM log_usage WHERE id = 1";

const KEPT: &str = "SELECT bytes_kept FROM log_attempts WHERE attempt_id = ?1";

const OLDEST_KEPT: &str =
    "SELECT cursor, size FROM log_chunks WHERE attempt_id = ?1 AND size > 0 ORDER BY cursor";

// A dropped chunk keeps its row (empty) so a resent copy is still a duplicate.
const DROP_CHUNK: &str = "UPDATE log_chunks SET data = X'', size = 0 WHERE cursor = ?1";

const TRIM_CHUNK: &str =
    "UPDATE log_chunks SET data = substr(data, ?2 + 1), size = size - ?2 WHERE cursor = ?1";

const RECORD_CUT: &str =
    "UPDATE log_attempts SET bytes_kept = bytes_kept - ?2, bytes_cut = bytes_cut + ?2 WHERE attempt_id = ?1";

const PAGE: &str = "SELECT cursor, step, attempt_id, attempt_number, stream, size, data FROM log_chunks \
     WHERE job_id = ?1 AND cursor > ?2 AND (?3 IS NULL OR step = ?3) AND size > 0 ORDER BY cursor";

/// Newest chunks first, for [`tail_cursor`].
const NEWEST_SIZES: &str = "SELECT cursor, size FROM log_chunks \
     WHERE job_id = ?1 AND (?2 IS NULL OR step = ?2) AND size > 0 ORDER BY cursor DESC";

const TRUNCATED: &str = "SELECT step, attempt_id, bytes_cut + bytes_dropped, bytes_pruned, bytes_refused \
     FROM log_attempts WHERE job_id = ?1 AND (?2 IS NULL OR step = ?2) \
     AND bytes_cut + bytes_dropped + bytes_pruned + bytes_refused > 0 ORDER BY attempt_id";

const DELETE_CHUNKS: &str = "DELETE FROM log_chunks WHERE job_id IN (SELECT value FROM json_each(?1))";
const DELETE_ATTEMPTS: &str = "DELETE FROM log_attempts WHERE job_id IN (SELECT value FROM json_each(?1))";

/// Page size of a logs file created from now on. SQLite writes and reads its files a page
/// per system call (a WAL frame, a checkpoint copy, a read): with 4 KiB pages a stored MB
/// cost ~770 `pwrite`s and ~500 `pread`s on the server, most of its CPU per MB. Larger
/// pages cut that; they also make each commit of a small append write whole larger pages,
/// so this stays well below SQLite's 64 KiB. Files created before keep their page size
/// (SQLite reads any), so nothing is migrated.
const NEW_FILE_PAGE_SIZE: i64 = 32 << 10;

/// Sets the page size of a logs file that holds nothing yet (just created, empty): the
/// size is fixed once the file is switched to WAL, which `schema::open_writer` does next.
pub(crate) fn size_pages_if_new(path: &std::path::Path) -> Result<()> {
    let empty = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
    if !empty {
        return Ok(());
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "page_size", NEW_FILE_PAGE_SIZE)?;
    let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    Ok(())
}

/// An append that passed the holder check, with what storing it needs.
pub(crate) struct CheckedAppend {
    pub(crate) append: LogAppend,
    pub(crate) number: u32,
    pub(crate) cap: u64,
}

/// On the main database: `Conflict` unless the sender holds the running attempt named.
pub(crate) fn check_append(conn: &Connection, append: LogAppend) -> Result<CheckedAppend> {
    let id = append.attempt_id;
    let row = conn
        .prepare_cached(HOLDER)?
        .query_row([id.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()?
        .ok_or_else(|| conflict(ConflictKind::WrongAttempt, format!("attempt {id} is unknown")))?;
    let (job, step, session, status, number, cap) = row;
    if job_id(&job)? != append.job_id || step != append.step {
        return Err(conflict(
            ConflictKind::WrongAttempt,
            format!("attempt {id} belongs to job {job} step '{step}'"),
        ));
    }
    if session_id(&session)? != append.session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {id} is held by another worker session"),
        ));
    }
    if parse_name::<AttemptStatus>(&status)? != AttemptStatus::Running {
        return Err(conflict(ConflictKind::Ended, format!("attempt {id} is no longer running ({status})")));
    }
    let cap = cap.and_then(|c| u64::try_from(c).ok()).unwrap_or(DEFAULT_LOG_CAP);
    Ok(CheckedAppend { append, number: u32_of(number)?, cap })
}

/// What one call of [`append`] did, beyond the per-item results.
pub(crate) struct Appended {
    /// Per item, in order.
    pub(crate) results: Vec<rota_store::Result<()>>,
    /// Bytes refused because the quota was full.
    pub(crate) refused: u64,
    /// Live log bytes after it.
    pub(crate) live: u64,
}

/// On the logs database: stores each checked append in its own savepoint. With a `quota`,
/// a chunk that would take the live bytes past it is refused: its row is kept empty (so a
/// resent copy stays refused) and its bytes are recorded on the attempt.
pub(crate) fn append(conn: &Connection, items: Vec<CheckedAppend>, quota: Option<u64>) -> Result<Appended> {
    let mut refused = 0;
    let results = items
        .iter()
        .map(|item| {
            in_savepoint(conn, |c| append_one(c, item, quota)).map(|r| refused += r).map_err(Into::into)
        })
        .collect();
    Ok(Appended { results, refused, live: live_bytes(conn)? })
}

/// Live log bytes (the sum of the stored chunks' sizes).
pub(crate) fn live_bytes(conn: &Connection) -> Result<u64> {
    let live: i64 = conn.prepare_cached(LIVE)?.query_row([], |r| r.get(0))?;
    Ok(live.max(0) as u64)
}

/// Stores one append; returns the bytes the quota refused.
fn append_one(conn: &Connection, item: &CheckedAppend, quota: Option<u64>) -> Result<u64> {
    let a = &item.append;
    let job = a.job_id.to_string();
    let quota = quota.map(i64_of);
    let mut insert = conn.prepare_cached(INSERT_CHUNK)?;
    let (mut added, mut refused): (i64, i64) = (0, 0);
    for ch in &a.chunks {
        let size = i64_of(ch.data.len() as u64);
        let fits = match quota {
            Some(q) => i64_of(live_bytes(conn)?) + size <= q,
            None => true,
        };
        let (stored, data): (i64, &[u8]) = if fits { (size, &ch.data) } else { (0, &[]) };
        let n = insert.execute((
            &job,
            &a.step,
            a.attempt_id.0,
            i64::from(item.number),
            ch.stream.as_str(),
            i64_of(ch.seq),
            stored,
            data,
        ))?;
        if n == 1 {
            if fits {
                added += size;
            } else {
                refused += size;
            }
        }
    }
    if added > 0 || refused > 0 || a.dropped > 0 {
        conn.prepare_cached(ADD_KEPT)?.execute((
            a.attempt_id.0,
            &job,
            &a.step,
            added,
            refused,
            i64_of(a.dropped),
        ))?;
    }
    if added > 0 {
        enforce_cap(conn, a.attempt_id, i64_of(item.cap))?;
    }
    Ok(refused.max(0) as u64)
}

/// Drops the oldest bytes of an attempt past `cap`: whole chunks, then the head of the
/// oldest remaining one, so exactly the last `cap` bytes are kept.
fn enforce_cap(conn: &Connection, attempt: AttemptId, cap: i64) -> Result<()> {
    let kept: i64 = conn.prepare_cached(KEPT)?.query_row([attempt.0], |r| r.get(0))?;
    let excess = kept - cap;
    if excess <= 0 {
        return Ok(());
    }
    let mut victims = Vec::new();
    {
        let mut st = conn.prepare_cached(OLDEST_KEPT)?;
        let mut rows = st.query([attempt.0])?;
        let mut covered = 0;
        while covered < excess {
            let Some(r) = rows.next()? else { break };
            let (cursor, size): (i64, i64) = (r.get(0)?, r.get(1)?);
            victims.push((cursor, size.min(excess - covered), size));
            covered += size;
        }
    }
    let mut cut = 0;
    for (cursor, drop, size) in victims {
        if drop == size {
            conn.prepare_cached(DROP_CHUNK)?.execute([cursor])?;
        } else {
            conn.prepare_cached(TRIM_CHUNK)?.execute((cursor, drop))?;
        }
        cut += drop;
    }
    conn.prepare_cached(RECORD_CUT)?.execute((attempt.0, cut))?;
    Ok(())
}

/// A page of a job's chunks after `q.after`, about `q.max_bytes` long (at least one chunk).
pub(crate) fn read_logs(conn: &Connection, q: &LogQuery) -> Result<LogPage> {
    let job = q.job_id.to_string();
    let mut page = LogPage { next_cursor: q.after, ..LogPage::default() };
    let max = i64_of(q.max_bytes);
    let mut total: i64 = 0;
    {
        let mut st = conn.prepare_cached(PAGE)?;
        let mut rows = st.query((&job, q.after, q.step.as_deref()))?;
        while let Some(r) = rows.next()? {
            let size: i64 = r.get(5)?;
            if !page.chunks.is_empty() && (total + size > max || page.chunks.len() >= MAX_PAGE_CHUNKS) {
                break;
            }
            total += size;
            let chunk = StoredChunk {
                cursor: r.get(0)?,
                step: r.get(1)?,
                attempt_id: AttemptId(r.get(2)?),
                attempt: u32_of(r.get(3)?)?,
                stream: parse_name::<Stream>(&r.get::<_, String>(4)?)?,
                data: r.get(6)?,
            };
            page.next_cursor = chunk.cursor;
            page.chunks.push(chunk);
        }
    }
    let mut st = conn.prepare_cached(TRUNCATED)?;
    let rows = st
        .query_map((&job, q.step.as_deref()), |r| {
            let bytes = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
            Ok(LogCut {
                step: r.get(0)?,
                attempt_id: AttemptId(r.get(1)?),
                cap_bytes: bytes(2)?,
                quota_pruned_bytes: bytes(3)?,
                quota_refused_bytes: bytes(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    page.truncated = rows;
    Ok(page)
}

/// The cursor the last `max_bytes` of output follow (see `JobStore::log_tail_cursor`).
pub(crate) fn tail_cursor(conn: &Connection, job: JobId, step: Option<&str>, max_bytes: u64) -> Result<i64> {
    let max = i64_of(max_bytes);
    let mut st = conn.prepare_cached(NEWEST_SIZES)?;
    let mut rows = st.query((job.to_string(), step))?;
    let (mut total, mut n): (i64, u32) = (0, 0);
    while let Some(r) = rows.next()? {
        let (cursor, size): (i64, i64) = (r.get(0)?, r.get(1)?);
        // At least one chunk (the newest), as a page holds at least one.
        if n > 0 && total + size > max {
            return Ok(cursor);
        }
        total += size;
        n += 1;
    }
    Ok(0)
}

/// Deletes every chunk of the jobs listed in `ids_json` (a JSON array of job ids).
pub(crate) fn delete_jobs(conn: &Connection, ids_json: &str) -> Result<()> {
    conn.prepare_cached(DELETE_CHUNKS)?.execute([ids_json])?;
    conn.prepare_cached(DELETE_ATTEMPTS)?.execute([ids_json])?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::schema::{LOGS, migrate, open_writer};
    use crate::{SqliteOptions, SqliteStore};
    use rota_domain::{AttemptId, JobId};
    use rota_store::{JobStore, LogCut, LogQuery};
    use std::time::Duration;

    /// Logs migration 2 (quota counters) on a logs file written by schema 1: the chunks and
    /// cuts stored before are read as before, and the live bytes count them.
    #[tokio::test]
    async fn logs_stored_before_the_quota_survive_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let logs_path = SqliteStore::logs_path_for(&path);
        let before = &LOGS[..1];
        assert_eq!(before.last().map(|m| m.name), Some("init"), "schema 1 is the one before");
        let job = JobId::new();
        {
            let mut conn = open_writer(&logs_path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, before, &logs_path).unwrap();
            // As schema 1's binary wrote them: two chunks, the first cut by the cap.
            for (seq, data) in [(0i64, &b""[..]), (1, &b"tail of the output\n"[..])] {
                conn.execute(
                    "INSERT INTO log_chunks (job_id, step, attempt_id, attempt_number, stream, seq, size, data) \
                     VALUES (?1, 'build', 7, 1, 'stdout', ?2, ?3, ?4)",
                    (job.to_string(), seq, data.len() as i64, data),
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO log_attempts (attempt_id, job_id, step, bytes_kept, bytes_cut) \
                 VALUES (7, ?1, 'build', 19, 4096)",
                [job.to_string()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(store.log_usage().live_bytes, 19, "live bytes count what was stored before");
        let page = store
            .read_logs(&LogQuery { job_id: job, step: None, after: 0, max_bytes: 1 << 20 })
            .await
            .unwrap();
        let data: Vec<u8> = page.chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(data, b"tail of the output\n");
        let cut = LogCut {
            step: "build".into(),
            attempt_id: AttemptId(7),
            cap_bytes: 4096,
            quota_pruned_bytes: 0,
            quota_refused_bytes: 0,
        };
        assert_eq!(page.truncated, [cut]);
    }
}
