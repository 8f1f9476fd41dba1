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

const JOB_EXISTS: &str = "SELECT 1 FROM jobs WHERE id = $1";

const UPSERT_KEY_REVOKE: &str = "INSERT INTO key_revokes (idempotency_key, terminate, signal, expires_at, \
     created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO UPDATE SET \
     terminate = excluded.terminate, signal = excluded.signal, expires_at = excluded.expires_at";

const JOB_OF_KEY: &str = "SELECT id FROM jobs WHERE idempotency_key = $1";

const LIVE_KEY_REVOKES: &str = "SELECT idempotency_key, terminate, signal, expires_at, created_at \
     FROM key_revokes WHERE expires_at IS NULL OR expires_at >= $1 ORDER BY created_at DESC, idempotency_key";

const PRUNE_KEY_REVOKES: &str = "DELETE FROM key_revokes WHERE expires_at IS NOT NULL AND expires_at < $1";

const LIVE_REVOKES: &str = "SELECT job_id, terminate, signal, expires_at, created_at FROM revokes \
     WHERE expires_at IS NULL OR expires_at >= $1 ORDER BY created_at DESC, job_id";

const PRUNE_REVOKES: &str = "DELETE FROM revokes WHERE expires_at IS NOT NULL AND expires_at < $1";

// One round trip for both kinds of revoke a new job may be bound by.
const REVOKED_AT_SUBMIT: &str = "SELECT EXISTS (SELECT 1 FROM revokes WHERE job_id = $1 \
         AND (expires_at IS NULL OR expires_at >= $2)) \
     OR EXISTS (SELECT 1 FROM key_revokes WHERE idempotency_key = $3 \
         AND (expires_at IS NULL OR expires_at >= $2))";

const EXCLUSIVE_CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const PAUSE: &str =
    "INSERT INTO paused_queues (queue, paused_at) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING";
const RESUME: &str = "DELETE FROM paused_queues WHERE queue = $1";
const PAUSED: &str = "SELECT queue FROM paused_queues";

// Two halves so each one reads its partial index (steps_ready, steps_running).
const QUEUE_DEPTHS: &str = "SELECT queue, 'ready', COUNT(*) FROM steps WHERE state = 'ready' GROUP BY queue \
     UNION ALL SELECT queue, 'running', COUNT(*) FROM steps WHERE state = 'running' GROUP BY queue";

/// Records each revoke and ends the live jobs it names, one savepoint each.
pub(crate) async fn revoke_jobs(
    tx: &mut Tx<'_>,
    reqs: &[RevokeRequest],
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<RevokeOutcome>>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(item!(tx, |sp| revoke_one(&sp, r, now).await));
    }
    Ok(out)
}

async fn revoke_one(tx: &Tx<'_>, r: &RevokeRequest, now: DateTime<Utc>) -> Result<RevokeOutcome> {
    let id = r.job_id;
    // Ids are issued by the server at submit: a revoke of any other could never match.
    if opt(tx, JOB_EXISTS, &[&id.0]).await?.is_none() {
        return Err(StoreError::NotFound(format!(
            "no job {id}: job ids are issued at submit (it may also have been pruned); to revoke a job \
             not submitted yet, revoke its idempotency key"
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
        out.push(item!(tx, |sp| revoke_key(&sp, r, now).await));
    }
    Ok(out)
}

async fn revoke_key(tx: &Tx<'_>, r: &KeyRevokeRequest, now: DateTime<Utc>) -> Result<KeyRevokeOutcome> {
    exec(tx, UPSERT_KEY_REVOKE, &[&r.key, &r.terminate, &r.signal, &r.expires_at, &now]).await?;
    let job = match opt(tx, JOB_OF_KEY, &[&r.key]).await? {
        Some(row) => {
            let req = RevokeRequest {
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
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let revoked: bool = one(tx, REVOKED_AT_SUBMIT, &[&id.0, &now, &key]).await?.try_get(0)?;
    if revoked {
        // Just inserted: queued, nothing runs yet.
        control::end_job(tx, id, JobState::Queued, JobEnd::Revoke, now, false).await?;
    }
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
            Ok(KeyRevokeRecord { key: r.try_get(0)?, terminate, signal, expires_at, created_at })
        })
        .collect()
}

pub(crate) async fn prune_revokes(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<u64> {
    Ok(exec(tx, PRUNE_REVOKES, &[&now]).await? + exec(tx, PRUNE_KEY_REVOKES, &[&now]).await?)
}

pub(crate) async fn set_paused(tx: &Tx<'_>, queue: &str, paused: bool, now: DateTime<Utc>) -> Result<bool> {
    // Waits for claims in flight; every later claim sees the pause.
    one(tx, EXCLUSIVE_CLAIM_LOCK, &[&crate::claim::CLAIM_LOCK]).await?;
    let changed =
        if paused { exec(tx, PAUSE, &[&queue, &now]).await? } else { exec(tx, RESUME, &[&queue]).await? };
    Ok(changed > 0)
}

pub(crate) async fn queue_stats(tx: &Tx<'_>) -> Result<Vec<QueueStats>> {
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    for r in rows(tx, QUEUE_DEPTHS, &[]).await? {
        let (queue, state, n): (String, &str, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let e = by_queue.entry(queue.clone()).or_insert(QueueStats {
            queue,
            ready: 0,
            running: 0,
            paused: false,
        });
        if state == "ready" {
            e.ready = crate::codec::u64_of(n);
        } else {
            e.running = crate::codec::u64_of(n);
        }
    }
    for r in rows(tx, PAUSED, &[]).await? {
        let q: String = r.try_get(0)?;
        by_queue
            .entry(q.clone())
            .or_insert(QueueStats { queue: q, ready: 0, running: 0, paused: true })
            .paused = true;
    }
    Ok(by_queue.into_values().collect())
}
