//! Leases on running attempts: heartbeats renew them (and carry stop requests back),
//! expiry marks attempts lost, a server start extends them all. What a lost attempt means
//! for its step is decided by the policy via [`crate::attempts::lose_all`]. Expiry is a
//! conditional update in effect: each attempt is re-read under its job's lock and only
//! lost if still running, so two leaders never expire one twice.

use crate::attempts::lose_all;
use crate::codec::after;
use crate::error::{Result, not_found};
use crate::tx::{Tx, exec, rows};
use crate::workers::{session_status, status_name};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, LostCause};
use rota_store::{Heartbeat, HeartbeatOutcome, LostAttempt, SessionStatus, StopCause};
use uuid::Uuid;

const TOUCH_WORKER: &str = "UPDATE workers SET last_heartbeat_at = $2, status = $3, \
     concurrency = COALESCE($4, concurrency) WHERE session = $1";

// Renewed even when it must stop, so it is not marked lost while dying. The rows are locked
// in attempt id order first, the order a batch of completions locks them in
// (`complete::LOCK_ATTEMPTS`): a plain `UPDATE ... WHERE id = ANY(..)` locks in scan order,
// and against a batch completing the same attempts in another order the two deadlocked,
// each deadlock stalling both for `deadlock_timeout` while leases ran out behind them.
const RENEW: &str = "WITH held AS (SELECT id FROM attempts \
     WHERE id = ANY($1) AND session = $2 AND status = 'running' ORDER BY id FOR NO KEY UPDATE) \
     UPDATE attempts a SET lease_expires_at = $3 FROM held WHERE a.id = held.id \
     RETURNING a.id, a.stop_cause";

const EXPIRED: &str = "SELECT job_id, id FROM attempts WHERE status = 'running' AND lease_expires_at < $1 \
     ORDER BY id";

const EXTEND_ALL: &str = "UPDATE attempts SET lease_expires_at = $1 WHERE status = 'running'";

/// Renews the leases the session holds and says which attempts it must stop.
pub(crate) async fn heartbeat(
    tx: &Tx<'_>,
    hb: &Heartbeat,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Result<HeartbeatOutcome> {
    let status = session_status(tx, hb.session)
        .await?
        .ok_or_else(|| not_found(format!("worker session {}", hb.session)))?;
    let mut out = HeartbeatOutcome::default();
    if status == SessionStatus::Offline {
        out.stop = hb.attempts.iter().map(|a| (*a, StopCause::NotHeld)).collect();
        return Ok(out);
    }
    let status = if hb.draining { SessionStatus::Draining } else { SessionStatus::Active };
    let concurrency = hb.concurrency.map(|c| i32::try_from(c).unwrap_or(i32::MAX));
    exec(tx, TOUCH_WORKER, &[&hb.session.0, &now, &status_name(status), &concurrency]).await?;
    let ids: Vec<i64> = hb.attempts.iter().map(|a| a.0).collect();
    let mut renewed = std::collections::HashMap::new();
    for r in rows(tx, RENEW, &[&ids, &hb.session.0, &after(now, ttl)]).await? {
        let cause: Option<String> = r.try_get(1)?;
        renewed.insert(r.try_get::<_, i64>(0)?, crate::codec::opt_stop_cause(cause)?);
    }
    for id in &hb.attempts {
        match renewed.get(&id.0) {
            Some(cause) => {
                out.renewed.push(*id);
                if let Some(cause) = cause {
                    out.stop.push((*id, *cause));
                }
            }
            None => out.stop.push((*id, StopCause::NotHeld)),
        }
    }
    Ok(out)
}

/// Marks attempts whose lease ended before `now` lost and applies each step's `on_lost`.
pub(crate) async fn expire_leases(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
    let expired = rows(tx, EXPIRED, &[&now])
        .await?
        .iter()
        .map(|r| Ok((JobId(r.try_get::<_, Uuid>(0)?), AttemptId(r.try_get(1)?))))
        .collect::<Result<Vec<_>>>()?;
    // Re-read under the job's lock: a completion or another leader may have ended it.
    let lost = lose_all(tx, expired, &LostCause::LeaseExpired, now, Some(now)).await?;
    Ok(lost)
}

/// Sets every running attempt's lease to `now + ttl`.
pub(crate) async fn extend_live_leases(
    tx: &Tx<'_>,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Result<u64> {
    exec(tx, EXTEND_ALL, &[&after(now, ttl)]).await
}
