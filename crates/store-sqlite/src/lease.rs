//! Leases on running attempts: heartbeats renew them (and carry stop requests back),
//! expiry marks attempts lost, a server start extends them all. What a lost attempt means
//! for its step is decided by the policy via [`crate::attempts::lose_attempt`].

use crate::attempts::{load_attempt, lose_attempt, select_attempts};
use crate::codec::{ms, ms_after};
use crate::error::{Result, not_found};
use crate::workers::{session_status, status_name};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptStatus, LostCause};
use rota_store::{Heartbeat, HeartbeatOutcome, LostAttempt, SessionStatus, StopCause};
use rusqlite::Connection;
use std::time::Duration;

const TOUCH_WORKER: &str = "UPDATE workers SET last_heartbeat_at = ?2, status = ?3, \
     concurrency = COALESCE(?4, concurrency) WHERE session = ?1";

const RENEW: &str = "UPDATE attempts SET lease_expires_at = ?2 WHERE id = ?1";

// INDEXED BY: without statistics the planner prefers scanning the table in `id` order to
// sorting a few index hits, and the table holds every attempt ever run.
pub(crate) const EXPIRED: &str = "SELECT id, job_id, step, number, session, status, outcome, stop_cause \
     FROM attempts INDEXED BY attempts_lease WHERE status = 'running' AND lease_expires_at < ?1 ORDER BY id";

pub(crate) const EXTEND_ALL: &str = "UPDATE attempts SET lease_expires_at = ?1 WHERE status = 'running'";

/// Renews the leases the session holds and says which attempts it must stop.
pub(crate) fn heartbeat(
    conn: &Connection,
    hb: &Heartbeat,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<HeartbeatOutcome> {
    let status = session_status(conn, hb.session)?
        .ok_or_else(|| not_found(format!("worker session {}", hb.session)))?;
    let mut out = HeartbeatOutcome::default();
    if status == SessionStatus::Offline {
        out.stop = hb.attempts.iter().map(|a| (*a, StopCause::NotHeld)).collect();
        return Ok(out);
    }
    let status = if hb.draining { SessionStatus::Draining } else { SessionStatus::Active };
    conn.prepare_cached(TOUCH_WORKER)?.execute((
        hb.session.to_string(),
        ms(now),
        status_name(status),
        hb.concurrency.map(i64::from),
    ))?;
    let lease = ms_after(now, ttl);
    for id in &hb.attempts {
        match load_attempt(conn, *id)? {
            Some(a) if a.session == hb.session && a.status == AttemptStatus::Running => {
                // Renewed even when it must stop, so it is not marked lost while dying.
                conn.prepare_cached(RENEW)?.execute((id.0, lease))?;
                out.renewed.push(*id);
                if let Some(cause) = a.stop_cause {
                    out.stop.push((*id, cause));
                }
            }
            _ => out.stop.push((*id, StopCause::NotHeld)),
        }
    }
    Ok(out)
}

/// Marks attempts whose lease ended before `now` lost and applies each step's `on_lost`.
pub(crate) fn expire_leases(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
    let expired = select_attempts(conn, EXPIRED, [ms(now)])?;
    expired.iter().map(|a| lose_attempt(conn, a, &LostCause::LeaseExpired, now)).collect()
}

/// Sets every running attempt's lease to `now + ttl`.
pub(crate) fn extend_live_leases(conn: &Connection, now: DateTime<Utc>, ttl: Duration) -> Result<u64> {
    Ok(conn.prepare_cached(EXTEND_ALL)?.execute([ms_after(now, ttl)])? as u64)
}
