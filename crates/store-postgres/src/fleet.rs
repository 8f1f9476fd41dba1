//! Fleet control state: durable revokes (of job ids and of idempotency keys), paused queues
//! and per-queue depth. A revoke ends the job under its row lock, and a claim only takes
//! steps still ready of a live job, so once it commits no claim starts the job. A pause
//! takes the claim lock exclusively (see `claim::CLAIM_LOCK`). Nothing is signalled here:
//! running attempts are flagged (with `terminate`) and returned for the server to push.

use crate::control;
use crate::error::Result;
use crate::jobs_read::load_row;
use crate::settle::lock_job;
use crate::tx::{Tx, exec, item, one, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::{JobEnd, JobId, JobState};
use rota_store::{
    KeyRevokeOutcome, KeyRevokeRecord, KeyRevokeRequest, QueueStats, RevokeOutcome, RevokeRecord,
    RevokeRequest, StoreError,
};
use std::collections::BTreeMap;
use tokio_postgres::Row;

const UPSERT_REVOKE: &str = "INSERT INTO revokes (job_id, terminate, signal, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO UPDATE SET terminate = excluded.terminate, \
     signal = excluded.signal, expires_at = excluded.expires_at";

// A revoke acts within its namespace: a job of another one is not found.
const JOB_EXISTS: &str = "SELECT 1 FROM jobs WHERE id = $1 AND namespace = $2";

const UPSERT_KEY_REVOKE: &str = "INSERT INTO key_revokes (idempotency_key, terminate, signal, expires_at, \
     created_at, namespace) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, idempotency_key) DO UPDATE SET \
     terminate = excluded.terminate, signal = excluded.signal, expires_at = excluded.expires_at";

const JOB_OF_KEY: &str = "SELECT id FROM jobs WHERE namespace = $1 AND idempotency_key = $2";

const LIVE_KEY_REVOKES: &str = "SELECT idempotency_key, terminate, signal, expires_at, created_at, namespace \
     FROM key_revokes WHERE expires_at IS NULL OR expires_at >= $1 ORDER BY created_at DESC, idempotency_key";

const PRUNE_KEY_REVOKES: &str = "DELETE FROM key_revokes WHERE expires_at IS NOT NULL AND expires_at < $1";

const LIVE_REVOKES: &str = "SELECT job_id, terminate, signal, expires_at, created_at FROM revokes \
     WHERE expires_at IS NULL OR expires_at >= $1 ORDER BY created_at DESC, job_id";

const PRUNE_REVOKES: &str = "DELETE FROM revokes WHERE expires_at IS NOT NULL AND expires_at < $1";

// One round trip for both kinds of revoke a new job may be bound by.
pub(crate) const REVOKED_AT_SUBMIT: &str = "SELECT EXISTS (SELECT 1 FROM revokes WHERE job_id = $1 \
         AND (expires_at IS NULL OR expires_at >= $2)) \
     OR EXISTS (SELECT 1 FROM key_revokes WHERE idempotency_key = $3 AND namespace = $4 \
         AND (expires_at IS NULL OR expires_at >= $2))";

const EXCLUSIVE_CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const PAUSE: &str = "INSERT INTO paused_queues (namespace, queue, paused_at) VALUES ($1, $2, $3) \
     ON CONFLICT (namespace, queue) DO NOTHING";
const RESUME: &str = "DELETE FROM paused_queues WHERE namespace = $1 AND queue = $2";
const PAUSED: &str = "SELECT namespace, queue FROM paused_queues WHERE ($1::text IS NULL OR namespace = $1)";

// Two halves so each one reads its partial index (steps_ready, steps_running).
// No min(uuid) before PostgreSQL 16: the text form sorts the same (lowercase hex).
const QUEUE_DEPTHS: &str = "SELECT namespace, queue, 'ready', COUNT(*), MIN(job_id::text) FROM steps \
     WHERE state = 'ready' AND ($1::text IS NULL OR namespace = $1) GROUP BY namespace, queue \
     UNION ALL SELECT namespace, queue, 'running', COUNT(*), NULL FROM steps WHERE state = 'running' \
     AND ($1::text IS NULL OR namespace = $1) GROUP BY namespace, queue";

/// Records each revoke and ends the live jobs it names, one savepoint each.
pub(crate) async fn revoke_jobs(
    tx: &mut Tx<'_>,
    reqs: &[RevokeRequest],
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<RevokeOutcome>>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(item!(tx, |sp| revoke_one(sp, r, now).await));
    }
    Ok(out)
}

async fn revoke_one(tx: &Tx<'_>, r: &RevokeRequest, now: DateTime<Utc>) -> Result<RevokeOutcome> {
    let id = r.job_id;
    // Ids are issued by the server at submit: a revoke of any other could never match.
    if opt(tx, JOB_EXISTS, &[&id.0, &r.namespace]).await?.is_none() {
        return Err(StoreError::NotFound(format!(
            "no job {id} in namespace '{}': job ids are issued at submit (it may also have been pruned, or \
             belong to another namespace); to revoke a job not submitted yet, revoke its idempotency key",
            r.namespace
        ))
        .into());
    }
    exec(tx, UPSERT_REVOKE, &[&id.0, &r.terminate, &r.signal, &r.expires_at, &now]).await?;
    let state = lock_job(tx, id).await?;
    match control::end_job(tx, id, state, JobEnd::Revoke, now, r.terminate).await? {
        Some(running) => {
            Ok(RevokeOutcome { job_id: id, row: Some(load_row(tx, id).await?), changed: true, running })
        }
        None => Ok(RevokeOutcome {
            job_id: id,
            row: Some(load_row(tx, id).await?),
            changed: false,
            running: Vec::new(),
        }),
    }
}

/// Records each key revoke and revokes the job that already carries the key.
pub(crate) async fn revoke_keys(
    tx: &mut Tx<'_>,
    reqs: &[KeyRevokeRequest],
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<KeyRevokeOutcome>>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(item!(tx, |sp| revoke_key(sp, r, now).await));
    }
    Ok(out)
}

async fn revoke_key(tx: &Tx<'_>, r: &KeyRevokeRequest, now: DateTime<Utc>) -> Result<KeyRevokeOutcome> {
    exec(tx, UPSERT_KEY_REVOKE, &[&r.key, &r.terminate, &r.signal, &r.expires_at, &now, &r.namespace])
        .await?;
    let job = match opt(tx, JOB_OF_KEY, &[&r.namespace, &r.key]).await? {
        Some(row) => {
            let req = RevokeRequest {
                namespace: r.namespace.clone(),
                job_id: JobId(row.try_get(0)?),
                terminate: r.terminate,
                signal: r.signal,
                expires_at: r.expires_at,
            };
            Some(revoke_one(tx, &req, now).await?)
        }
        None => None,
    };
    Ok(KeyRevokeOutcome { key: r.key.clone(), job })
}

/// After a job is inserted: if a revoke names it (by id, or by its idempotency key), it
/// ends `revoked` at once.
pub(crate) async fn apply_pending_revoke(
    tx: &Tx<'_>,
    id: JobId,
    namespace: &str,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let revoked: bool = one(tx, REVOKED_AT_SUBMIT, &[&id.0, &now, &key, &namespace]).await?.try_get(0)?;
    if revoked {
        end_revoked_at_submit(tx, id, now).await?;
    }
    Ok(())
}

/// Ends job `id`, just inserted, that `REVOKED_AT_SUBMIT` found bound by a revoke.
pub(crate) async fn end_revoked_at_submit(tx: &Tx<'_>, id: JobId, now: DateTime<Utc>) -> Result<()> {
    // Just inserted: queued, nothing runs yet.
    control::end_job(tx, id, JobState::Queued, JobEnd::Revoke, now, false).await?;
    Ok(())
}

/// A live revoke row's fields after its key: terminate, signal, expires at, created at.
type RevokeFields = (bool, Option<i32>, Option<DateTime<Utc>>, DateTime<Utc>);

fn revoke_fields(r: &Row) -> Result<RevokeFields> {
    Ok((r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
}

pub(crate) async fn list_revokes(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<RevokeRecord>> {
    rows(tx, LIVE_REVOKES, &[&now])
        .await?
        .iter()
        .map(|r| {
            let (terminate, signal, expires_at, created_at) = revoke_fields(r)?;
            Ok(RevokeRecord { job_id: JobId(r.try_get(0)?), terminate, signal, expires_at, created_at })
        })
        .collect()
}

pub(crate) async fn list_key_revokes(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<KeyRevokeRecord>> {
    rows(tx, LIVE_KEY_REVOKES, &[&now])
        .await?
        .iter()
        .map(|r| {
            let (terminate, signal, expires_at, created_at) = revoke_fields(r)?;
            Ok(KeyRevokeRecord {
                namespace: r.try_get(5)?,
                key: r.try_get(0)?,
                terminate,
                signal,
                expires_at,
                created_at,
            })
        })
        .collect()
}

pub(crate) async fn prune_revokes(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<u64> {
    Ok(exec(tx, PRUNE_REVOKES, &[&now]).await? + exec(tx, PRUNE_KEY_REVOKES, &[&now]).await?)
}

pub(crate) async fn set_paused(
    tx: &Tx<'_>,
    namespace: &str,
    queue: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    // Waits for claims in flight; every later claim sees the pause.
    one(tx, EXCLUSIVE_CLAIM_LOCK, &[&crate::claim::CLAIM_LOCK]).await?;
    let changed = if paused {
        exec(tx, PAUSE, &[&namespace, &queue, &now]).await?
    } else {
        exec(tx, RESUME, &[&namespace, &queue]).await?
    };
    Ok(changed > 0)
}

/// Queues with live steps or paused, of one namespace or (`None`) of all, by namespace
/// and name.
pub(crate) async fn queue_stats(tx: &Tx<'_>, namespace: Option<&str>) -> Result<Vec<QueueStats>> {
    let mut by_queue: BTreeMap<(String, String), QueueStats> = BTreeMap::new();
    let blank = |namespace: String, queue: String| QueueStats {
        namespace,
        queue,
        ready: 0,
        running: 0,
        paused: false,
        oldest_ready: None,
    };
    for r in rows(tx, QUEUE_DEPTHS, &[&namespace]).await? {
        let (ns, queue, state, n): (String, String, &str, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let oldest: Option<&str> = r.try_get(4)?;
        let e = by_queue.entry((ns.clone(), queue.clone())).or_insert_with(|| blank(ns, queue));
        if state == "ready" {
            e.ready = crate::codec::u64_of(n);
            e.oldest_ready = oldest
                .map(|s| s.parse::<uuid::Uuid>().map(rota_domain::JobId))
                .transpose()
                .map_err(|e| crate::error::corrupt(format!("steps.job_id: {e}")))?;
        } else {
            e.running = crate::codec::u64_of(n);
        }
    }
    for r in rows(tx, PAUSED, &[&namespace]).await? {
        let (ns, q): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        by_queue.entry((ns.clone(), q.clone())).or_insert_with(|| blank(ns, q)).paused = true;
    }
    Ok(by_queue.into_values().collect())
}
