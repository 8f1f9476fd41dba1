//! Fleet control state: durable revokes and paused queues, and per-queue depth. A revoke
//! is a row written in the same serialized writer as claims, so once it commits no claim
//! can start the job. It never signals anything itself: running attempts are flagged
//! (with `terminate`) and returned for the server to push.

use crate::codec::{job_id, ms, opt_time, time};
use crate::control;
use crate::error::Result;
use crate::jobs_read::load_row;
use chrono::{DateTime, Utc};
use rota_domain::{JobEnd, JobState};
use rota_store::{
    KeyRevokeOutcome, KeyRevokeRecord, KeyRevokeRequest, QueueStats, RevokeOutcome, RevokeRecord,
    RevokeRequest, StoreError,
};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

const UPSERT_REVOKE: &str = "INSERT INTO revokes (job_id, terminate, signal, expires_at, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id) DO UPDATE SET terminate = excluded.terminate, \
     signal = excluded.signal, expires_at = excluded.expires_at";

// A revoke acts within its namespace: a job of another one is not found.
const JOB_EXISTS: &str = "SELECT 1 FROM jobs WHERE id = ?1 AND namespace = ?2";

const UPSERT_KEY_REVOKE: &str = "INSERT INTO key_revokes (idempotency_key, terminate, signal, expires_at, \
     created_at, namespace) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (namespace, idempotency_key) DO UPDATE SET \
     terminate = excluded.terminate, signal = excluded.signal, expires_at = excluded.expires_at";

const JOB_OF_KEY: &str = "SELECT id FROM jobs WHERE namespace = ?1 AND idempotency_key = ?2";

const LIVE_KEY_REVOKES: &str = "SELECT idempotency_key, terminate, signal, expires_at, created_at, namespace \
     FROM key_revokes WHERE expires_at IS NULL OR expires_at >= ?1 ORDER BY created_at DESC, idempotency_key";

const PRUNE_KEY_REVOKES: &str = "DELETE FROM key_revokes WHERE expires_at IS NOT NULL AND expires_at < ?1";

const KEY_REVOKE_OF: &str = "SELECT 1 FROM key_revokes WHERE idempotency_key = ?1 AND (expires_at IS NULL OR expires_at >= ?2) \
     AND namespace = ?3";

const LIVE_REVOKES: &str = "SELECT job_id, terminate, signal, expires_at, created_at, '' FROM revokes \
     WHERE expires_at IS NULL OR expires_at >= ?1 ORDER BY created_at DESC, job_id";

const PRUNE_REVOKES: &str = "DELETE FROM revokes WHERE expires_at IS NOT NULL AND expires_at < ?1";

const REVOKE_OF: &str =
    "SELECT terminate FROM revokes WHERE job_id = ?1 AND (expires_at IS NULL OR expires_at >= ?2)";

const PAUSE: &str = "INSERT INTO paused_queues (namespace, queue, paused_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (namespace, queue) DO NOTHING";
const RESUME: &str = "DELETE FROM paused_queues WHERE namespace = ?1 AND queue = ?2";
const PAUSED: &str = "SELECT namespace, queue FROM paused_queues";
const PAUSED_IN: &str = "SELECT queue FROM paused_queues WHERE namespace = ?1";

// Two halves so each one reads its partial index (steps_ready, steps_running) instead of
// scanning every step ever run.
pub(crate) const QUEUE_DEPTHS: &str = "SELECT namespace, queue, 'ready', COUNT(*), MIN(job_id) FROM steps \
     WHERE state = 'ready' GROUP BY namespace, queue \
     UNION ALL SELECT namespace, queue, 'running', COUNT(*), NULL FROM steps WHERE state = 'running' \
     GROUP BY namespace, queue";

/// Records each revoke and ends the live jobs it names.
pub(crate) fn revoke_jobs(
    conn: &Connection,
    reqs: Vec<RevokeRequest>,
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<RevokeOutcome>>> {
    Ok(reqs
        .into_iter()
        .map(|r| crate::writer::in_savepoint(conn, |c| revoke_one(c, &r, now)).map_err(Into::into))
        .collect())
}

fn revoke_one(conn: &Connection, r: &RevokeRequest, now: DateTime<Utc>) -> Result<RevokeOutcome> {
    let id = r.job_id.to_string();
    // Ids are issued by the server at submit: a revoke of any other could never match.
    let exists =
        conn.prepare_cached(JOB_EXISTS)?.query_row([&id, &r.namespace], |_| Ok(())).optional()?.is_some();
    if !exists {
        return Err(StoreError::NotFound(format!(
            "no job {id} in namespace '{}': job ids are issued at submit (it may also have been pruned, or \
             belong to another namespace); to revoke a job not submitted yet, revoke its idempotency key",
            r.namespace
        ))
        .into());
    }
    conn.prepare_cached(UPSERT_REVOKE)?.execute((
        &id,
        r.terminate,
        r.signal,
        r.expires_at.map(ms),
        ms(now),
    ))?;
    let row = load_row(conn, r.job_id)?;
    match control::end_job(conn, r.job_id, row.state, JobEnd::Revoke, now, r.terminate)? {
        Some(running) => Ok(RevokeOutcome {
            job_id: r.job_id,
            row: Some(load_row(conn, r.job_id)?),
            changed: true,
            running,
        }),
        None => Ok(RevokeOutcome { job_id: r.job_id, row: Some(row), changed: false, running: Vec::new() }),
    }
}

/// Records each key revoke and revokes the job that already carries the key.
pub(crate) fn revoke_keys(
    conn: &Connection,
    reqs: Vec<KeyRevokeRequest>,
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<KeyRevokeOutcome>>> {
    Ok(reqs
        .into_iter()
        .map(|r| crate::writer::in_savepoint(conn, |c| revoke_key(c, &r, now)).map_err(Into::into))
        .collect())
}

fn revoke_key(conn: &Connection, r: &KeyRevokeRequest, now: DateTime<Utc>) -> Result<KeyRevokeOutcome> {
    conn.prepare_cached(UPSERT_KEY_REVOKE)?.execute((
        &r.key,
        r.terminate,
        r.signal,
        r.expires_at.map(ms),
        ms(now),
        &r.namespace,
    ))?;
    let existing: Option<String> =
        conn.prepare_cached(JOB_OF_KEY)?.query_row([&r.namespace, &r.key], |row| row.get(0)).optional()?;
    let job = match existing {
        Some(id) => Some(revoke_one(
            conn,
            &RevokeRequest {
                namespace: r.namespace.clone(),
                job_id: job_id(&id)?,
                terminate: r.terminate,
                signal: r.signal,
                expires_at: r.expires_at,
            },
            now,
        )?),
        None => None,
    };
    Ok(KeyRevokeOutcome { key: r.key.clone(), job })
}

/// After a job is inserted: if a revoke names it (by id, or by its idempotency key), it
/// ends `revoked` at once.
pub(crate) fn apply_pending_revoke(
    conn: &Connection,
    id: rota_domain::JobId,
    namespace: &str,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let by_id = conn
        .prepare_cached(REVOKE_OF)?
        .query_row((id.to_string(), ms(now)), |r| r.get::<_, bool>(0))
        .optional()?
        .is_some();
    let by_key = match key {
        Some(k) => conn
            .prepare_cached(KEY_REVOKE_OF)?
            .query_row((k, ms(now), namespace), |_| Ok(()))
            .optional()?
            .is_some(),
        None => false,
    };
    if by_id || by_key {
        // Just inserted: queued, nothing runs yet.
        control::end_job(conn, id, JobState::Queued, JobEnd::Revoke, now, false)?;
    }
    Ok(())
}

/// A live revoke row: (job id or key, terminate, signal, expires at, created at, namespace
/// (empty for job revokes: job ids are unique across namespaces)).
type RevokeRow = (String, bool, Option<i32>, Option<i64>, i64, String);

/// The live rows of a revoke table (`sql` selects those columns for `?1` = now).
fn revoke_rows(conn: &Connection, sql: &str, now: DateTime<Utc>) -> Result<Vec<RevokeRow>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st
        .query_map([ms(now)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<Vec<RevokeRow>>>()?;
    Ok(rows)
}

pub(crate) fn list_revokes(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<RevokeRecord>> {
    revoke_rows(conn, LIVE_REVOKES, now)?
        .into_iter()
        .map(|(id, terminate, signal, expires, created, _)| {
            Ok(RevokeRecord {
                job_id: job_id(&id)?,
                terminate,
                signal,
                expires_at: opt_time(expires)?,
                created_at: time(created)?,
            })
        })
        .collect()
}

pub(crate) fn list_key_revokes(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<KeyRevokeRecord>> {
    revoke_rows(conn, LIVE_KEY_REVOKES, now)?
        .into_iter()
        .map(|(key, terminate, signal, expires, created, namespace)| {
            Ok(KeyRevokeRecord {
                namespace,
                key,
                terminate,
                signal,
                expires_at: opt_time(expires)?,
                created_at: time(created)?,
            })
        })
        .collect()
}

pub(crate) fn prune_revokes(conn: &Connection, now: DateTime<Utc>) -> Result<u64> {
    let jobs = conn.prepare_cached(PRUNE_REVOKES)?.execute([ms(now)])?;
    let keys = conn.prepare_cached(PRUNE_KEY_REVOKES)?.execute([ms(now)])?;
    Ok((jobs + keys) as u64)
}

pub(crate) fn set_paused(
    conn: &Connection,
    namespace: &str,
    queue: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let changed = if paused {
        conn.prepare_cached(PAUSE)?.execute((namespace, queue, ms(now)))?
    } else {
        conn.prepare_cached(RESUME)?.execute([namespace, queue])?
    };
    Ok(changed > 0)
}

/// Names of the paused queues of one namespace.
pub(crate) fn paused_queues(conn: &Connection, namespace: &str) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached(PAUSED_IN)?;
    Ok(st.query_map([namespace], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Queues with live steps or paused, of one namespace or (`None`) of all, by namespace
/// and name.
pub(crate) fn queue_stats(conn: &Connection, namespace: Option<&str>) -> Result<Vec<QueueStats>> {
    let wanted = |ns: &str| namespace.is_none_or(|n| n == ns);
    let mut by_queue: BTreeMap<(String, String), QueueStats> = BTreeMap::new();
    let mut st = conn.prepare_cached(QUEUE_DEPTHS)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let blank = |namespace: String, queue: String| QueueStats {
        namespace,
        queue,
        ready: 0,
        running: 0,
        paused: false,
        oldest_ready: None,
    };
    for (ns, queue, state, n, oldest) in rows.into_iter().filter(|r| wanted(&r.0)) {
        let e = by_queue.entry((ns.clone(), queue.clone())).or_insert_with(|| blank(ns, queue));
        if state == "ready" {
            e.ready = n as u64;
            e.oldest_ready = oldest.as_deref().map(crate::codec::job_id).transpose()?;
        } else {
            e.running = n as u64;
        }
    }
    let mut st = conn.prepare_cached(PAUSED)?;
    let paused = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (ns, q) in paused.into_iter().filter(|r| wanted(&r.0)) {
        by_queue.entry((ns.clone(), q.clone())).or_insert_with(|| blank(ns, q)).paused = true;
    }
    Ok(by_queue.into_values().collect())
}
