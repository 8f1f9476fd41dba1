//! Log chunks, in tables of their own: checking that the sender holds the attempt,
//! appending with dedupe on (attempt, stream, seq), the per-attempt cap that keeps the
//! tail, the total quota's refusal of new chunks, and paged reads. Never writes job tables
//! (which jobs the quota prunes is `quota.rs`).

use crate::codec::{i64_of, parse_name, u32_of, u64_of};
use crate::error::{Result, conflict};
use crate::tx::{Tx, exec, opt, rows};
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{AttemptId, AttemptStatus, JobId, SessionId, Stream};
use rota_store::{ConflictKind, LogAppend, LogCut, LogPage, LogQuery, StoredChunk};
use uuid::Uuid;

/// Most chunks in one page, however small they are.
const MAX_PAGE_CHUNKS: i64 = 10_000;

const HOLDER: &str = "SELECT a.job_id, a.step, a.session, a.status, a.number, s.log_cap \
     FROM attempts a JOIN steps s ON s.job_id = a.job_id AND s.name = a.step WHERE a.id = $1";

const INSERT_CHUNK: &str = "INSERT INTO log_chunks \
     (job_id, step, attempt_id, attempt_number, stream, seq, size, data) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (attempt_id, stream, seq) DO NOTHING";

// bytes_dropped is a running total reported by the worker: the largest one wins, so a
// resent or reordered append never counts twice.
const ADD_KEPT: &str = "INSERT INTO log_attempts AS l \
     (attempt_id, job_id, step, bytes_kept, bytes_refused, bytes_dropped) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (attempt_id) DO UPDATE SET bytes_kept = l.bytes_kept + excluded.bytes_kept, \
     bytes_refused = l.bytes_refused + excluded.bytes_refused, \
     bytes_dropped = GREATEST(l.bytes_dropped, excluded.bytes_dropped) RETURNING bytes_kept";

const OLDEST_KEPT: &str =
    "SELECT cursor, size FROM log_chunks WHERE attempt_id = $1 AND size > 0 ORDER BY cursor";

// A dropped chunk keeps its row (empty) so a resent copy is still a duplicate.
const DROP_CHUNK: &str = "UPDATE log_chunks SET data = ''::bytea, size = 0 WHERE cursor = $1";

const TRIM_CHUNK: &str = "UPDATE log_chunks SET data = substring(data from ($2::bigint + 1)::integer), size = size - $2::bigint WHERE cursor = $1";

const RECORD_CUT: &str =
    "UPDATE log_attempts SET bytes_kept = bytes_kept - $2, bytes_cut = bytes_cut + $2 WHERE attempt_id = $1";

// A page is chosen from sizes first, so a large backlog is never read whole.
const PAGE_SIZES: &str = "SELECT cursor, size FROM log_chunks \
     WHERE job_id = $1 AND cursor > $2 AND ($3::text IS NULL OR step = $3) AND size > 0 ORDER BY cursor LIMIT $4";

const PAGE: &str = "SELECT cursor, step, attempt_id, attempt_number, stream, data FROM log_chunks \
     WHERE job_id = $1 AND cursor > $2 AND cursor <= $3 AND ($4::text IS NULL OR step = $4) AND size > 0 \
     ORDER BY cursor";

/// Newest chunks first, for [`tail_cursor`].
const NEWEST_SIZES: &str = "SELECT cursor, size FROM log_chunks \
     WHERE job_id = $1 AND ($2::text IS NULL OR step = $2) AND size > 0 ORDER BY cursor DESC";

const TRUNCATED: &str = "SELECT step, attempt_id, bytes_cut + bytes_dropped, bytes_pruned, bytes_refused \
     FROM log_attempts WHERE job_id = $1 AND ($2::text IS NULL OR step = $2) \
     AND bytes_cut + bytes_dropped + bytes_pruned + bytes_refused > 0 ORDER BY attempt_id";

// Appends to one job take turns until they commit, so a job's cursors are handed out in
// commit order and a reader that saw cursor N never later finds a chunk below N (a follower
// pages by cursor). Keyed by the job id's hash: a collision only makes two jobs take turns.
const LOCK_JOB_LOGS: &str = "SELECT pg_advisory_xact_lock(1919906914, hashtext($1::uuid::text))";

/// Live log bytes: what the attempts keep.
pub(crate) const LIVE: &str = "SELECT COALESCE(SUM(bytes_kept), 0)::bigint FROM log_attempts";

/// Takes the log lock of each job, in id order (so two batches never wait on each other).
pub(crate) async fn lock_jobs(tx: &Tx<'_>, items: &[LogAppend]) -> Result<()> {
    let jobs: std::collections::BTreeSet<Uuid> = items.iter().map(|a| a.job_id.0).collect();
    for job in jobs {
        crate::tx::one(tx, LOCK_JOB_LOGS, &[&job]).await?;
    }
    Ok(())
}

/// What storing one append changed.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// Live bytes added (after the cap's cut; may be negative).
    pub(crate) live_delta: i64,
    /// Bytes refused because the quota was full.
    pub(crate) refused: u64,
}

/// Checks that the sender holds the running attempt named, then stores its chunks. With a
/// `quota`, a chunk that would take `live` past it is refused: its row is kept empty (so
/// a resent copy stays refused) and its bytes are recorded on the attempt.
pub(crate) async fn append_one(
    tx: &Tx<'_>,
    a: &LogAppend,
    quota: Option<u64>,
    live: u64,
) -> Result<Appended> {
    let (number, cap) = check_append(tx, a).await?;
    let quota = quota.map(i64_of);
    let mut live = i64_of(live);
    let (mut added, mut refused): (i64, i64) = (0, 0);
    for ch in &a.chunks {
        let size = i64_of(ch.data.len() as u64);
        let fits = quota.is_none_or(|q| live + size <= q);
        let (stored, data): (i64, &[u8]) = if fits { (size, &ch.data) } else { (0, &[]) };
        let seq = i64_of(ch.seq);
        let n = exec(
            tx,
            INSERT_CHUNK,
            &[&a.job_id.0, &a.step, &a.attempt_id.0, &number, &ch.stream.as_str(), &seq, &stored, &data],
        )
        .await?;
        if n == 1 {
            if fits {
                added += size;
                live += size;
            } else {
                refused += size;
            }
        }
    }
    let mut cut = 0;
    if added > 0 || refused > 0 || a.dropped > 0 {
        let kept: i64 = crate::tx::one(
            tx,
            ADD_KEPT,
            &[&a.attempt_id.0, &a.job_id.0, &a.step, &added, &refused, &i64_of(a.dropped)],
        )
        .await?
        .try_get(0)?;
        if added > 0 && kept > cap {
            cut = enforce_cap(tx, a.attempt_id, kept - cap).await?;
        }
    }
    Ok(Appended { live_delta: added - cut, refused: u64_of(refused) })
}

/// `Conflict` unless the sender holds the running attempt named; its number and log cap.
async fn check_append(tx: &Tx<'_>, a: &LogAppend) -> Result<(i32, i64)> {
    let id = a.attempt_id;
    let r = opt(tx, HOLDER, &[&id.0])
        .await?
        .ok_or_else(|| conflict(ConflictKind::WrongAttempt, format!("attempt {id} is unknown")))?;
    let (job, step, session): (Uuid, String, Uuid) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
    if JobId(job) != a.job_id || step != a.step {
        return Err(conflict(
            ConflictKind::WrongAttempt,
            format!("attempt {id} belongs to job {job} step '{step}'"),
        ));
    }
    if SessionId(session) != a.session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {id} is held by another worker session"),
        ));
    }
    let status: &str = r.try_get(3)?;
    if parse_name::<AttemptStatus>(status)? != AttemptStatus::Running {
        return Err(conflict(ConflictKind::Ended, format!("attempt {id} is no longer running ({status})")));
    }
    let cap: Option<i64> = r.try_get(5)?;
    Ok((r.try_get(4)?, cap.unwrap_or(i64_of(DEFAULT_LOG_CAP))))
}

/// Drops the oldest `excess` bytes of an attempt: whole chunks, then the head of the
/// oldest remaining one, so exactly the last `cap` bytes are kept. Returns the bytes cut.
async fn enforce_cap(tx: &Tx<'_>, attempt: AttemptId, excess: i64) -> Result<i64> {
    let mut cut = 0;
    for r in rows(tx, OLDEST_KEPT, &[&attempt.0]).await? {
        if cut >= excess {
            break;
        }
        let (cursor, size): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        let drop = size.min(excess - cut);
        if drop == size {
            exec(tx, DROP_CHUNK, &[&cursor]).await?;
        } else {
            exec(tx, TRIM_CHUNK, &[&cursor, &drop]).await?;
        }
        cut += drop;
    }
    exec(tx, RECORD_CUT, &[&attempt.0, &cut]).await?;
    Ok(cut)
}

/// A page of a job's chunks after `q.after`, about `q.max_bytes` long (at least one chunk).
/// The cursor the last `max_bytes` of output follow (see `JobStore::log_tail_cursor`).
pub(crate) async fn tail_cursor(tx: &Tx<'_>, job: JobId, step: Option<&str>, max_bytes: u64) -> Result<i64> {
    let max = i64_of(max_bytes);
    let (mut total, mut n): (i64, u32) = (0, 0);
    // A portal would stop early; the sizes of one job's chunks are few enough to read.
    for r in rows(tx, NEWEST_SIZES, &[&job.0, &step]).await? {
        let (cursor, size): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        // At least one chunk (the newest), as a page holds at least one.
        if n > 0 && total + size > max {
            return Ok(cursor);
        }
        total += size;
        n += 1;
    }
    Ok(0)
}

pub(crate) async fn read_logs(tx: &Tx<'_>, q: &LogQuery) -> Result<LogPage> {
    let mut page = LogPage { next_cursor: q.after, ..LogPage::default() };
    let max = i64_of(q.max_bytes);
    let (mut total, mut last, mut n) = (0i64, None, 0usize);
    for r in rows(tx, PAGE_SIZES, &[&q.job_id.0, &q.after, &q.step, &MAX_PAGE_CHUNKS]).await? {
        let (cursor, size): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        if n > 0 && total + size > max {
            break;
        }
        total += size;
        n += 1;
        last = Some(cursor);
    }
    if let Some(last) = last {
        for r in rows(tx, PAGE, &[&q.job_id.0, &q.after, &last, &q.step]).await? {
            let chunk = StoredChunk {
                cursor: r.try_get(0)?,
                step: r.try_get(1)?,
                attempt_id: AttemptId(r.try_get(2)?),
                attempt: u32_of(i64::from(r.try_get::<_, i32>(3)?))?,
                stream: parse_name::<Stream>(r.try_get(4)?)?,
                data: r.try_get(5)?,
            };
            page.next_cursor = chunk.cursor;
            page.chunks.push(chunk);
        }
    }
    page.truncated = rows(tx, TRUNCATED, &[&q.job_id.0, &q.step])
        .await?
        .iter()
        .map(|r| {
            Ok(LogCut {
                step: r.try_get(0)?,
                attempt_id: AttemptId(r.try_get(1)?),
                cap_bytes: u64_of(r.try_get(2)?),
                quota_pruned_bytes: u64_of(r.try_get(3)?),
                quota_refused_bytes: u64_of(r.try_get(4)?),
            })
        })
        .collect::<Result<_>>()?;
    Ok(page)
}
