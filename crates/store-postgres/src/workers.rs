//! Worker sessions: registration (superseding a live session of the same name, or refusing
//! the name while another instance holds it), leaving, lookup by credential and the fleet
//! listing. Registrations of one name take turns on an advisory lock, and the partial
//! unique index `workers_live_name` makes a second live session of a name impossible
//! whichever server registers it. Attempts a session loses are ended through
//! [`crate::attempts`]; nothing here decides a step's fate.

use crate::attempts::lose_all;
use crate::codec::u32_of;
use crate::error::{Error, Result, conflict, corrupt, not_found};
use crate::tx::{Tx, exec, one, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, LostCause, SessionId};
use rota_store::{
    ConflictKind, Forgotten, LostAttempt, NameHolder, Registered, SessionStatus, StoreError, WorkerRecord,
    WorkerRegistration,
};
use tokio_postgres::Row;
use uuid::Uuid;

/// Registrations of one name in one namespace are serialized on this lock (1919906913 is
/// "rota" in hex, the hash of namespace and name the second key).
const LOCK_NAME: &str = "SELECT pg_advisory_xact_lock(1919906913, hashtext($1 || '/' || $2))";

const INSERT_WORKER: &str = "INSERT INTO workers (session, name, token_hash, host, profile, version, queues, \
     tags, concurrency, status, pid, registered_at, last_heartbeat_at, instance_id, namespace) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11, $12, $13)";

const TAKEN: &str = "SELECT EXISTS (SELECT 1 FROM workers WHERE session = $1 OR token_hash = $2)";

/// Sessions of a name not yet offline (stale ones included: they are superseded too).
/// Names are unique per namespace: `w1` of `a` and `w1` of `b` are two workers.
const LIVE_NAMESAKES: &str = "SELECT session, instance_id, host, last_heartbeat_at FROM workers \
     WHERE namespace = $2 AND name = $1 AND status <> 'offline' ORDER BY registered_at DESC, session DESC FOR UPDATE";

// `FOR UPDATE` first: a claim in flight for the session holds its row `FOR KEY SHARE`
// (`claim::SELECT_WORKER`), which a plain update (a no-key update) would not wait for.
const SET_OFFLINE: &str = "WITH locked AS (SELECT session FROM workers WHERE session = $1 FOR UPDATE) \
     UPDATE workers w SET status = 'offline' FROM locked WHERE w.session = locked.session";

const SESSION_STATUS: &str = "SELECT status FROM workers WHERE session = $1";

const HELD_ATTEMPTS: &str = "SELECT job_id, id FROM attempts WHERE session = $1 AND status = 'running'";

// Both worker queries select the same columns, decoded by `decode`.
const BY_TOKEN: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running'), w.instance_id, \
     w.namespace FROM workers w WHERE w.token_hash = $1 AND w.status <> 'offline'";

const LATEST_PER_NAME: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running'), w.instance_id, \
     w.namespace \
     FROM (SELECT DISTINCT ON (namespace, name) * FROM workers \
         ORDER BY namespace, name, registered_at DESC, session DESC) w \
     ORDER BY w.status = 'offline', w.namespace, w.name";

/// A session of the registering name that has not gone offline.
struct Namesake {
    session: Uuid,
    instance_id: Option<String>,
    host: String,
    last_heartbeat_at: DateTime<Utc>,
}

impl Namesake {
    /// True if this session holds the name against `reg`: it is live (heard from within
    /// `stale_after`) and provably another instance (both sent an instance id, and the ids
    /// or the hosts differ). Sessions without an instance id prove nothing.
    fn holds_against(&self, reg: &WorkerRegistration, now: DateTime<Utc>) -> bool {
        let stale_after = chrono::Duration::from_std(reg.stale_after).unwrap_or(chrono::Duration::MAX);
        let live = now.signed_duration_since(self.last_heartbeat_at) <= stale_after;
        let other = match (&self.instance_id, &reg.instance_id) {
            (Some(theirs), Some(ours)) => theirs != ours || self.host != reg.host,
            _ => false,
        };
        live && other
    }

    fn holder(&self, name: &str) -> NameHolder {
        NameHolder {
            name: name.to_string(),
            session: SessionId(self.session),
            instance_id: self.instance_id.clone(),
            host: self.host.clone(),
            last_heartbeat_at: self.last_heartbeat_at,
        }
    }
}

/// Registers a session; a live session with the same name goes offline and loses its
/// attempts, unless another instance holds the name (then nothing is written and the
/// holder is named), see `JobStore::register_worker`.
pub(crate) async fn register_worker(
    tx: &Tx<'_>,
    reg: &WorkerRegistration,
    now: DateTime<Utc>,
) -> Result<Registered> {
    one(tx, LOCK_NAME, &[&reg.namespace, &reg.name]).await?;
    let older = rows(tx, LIVE_NAMESAKES, &[&reg.name, &reg.namespace])
        .await?
        .iter()
        .map(|r| {
            Ok(Namesake {
                session: r.try_get(0)?,
                instance_id: r.try_get(1)?,
                host: r.try_get(2)?,
                last_heartbeat_at: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Checked before anything is written, so a refusal changes nothing.
    if opt(tx, IS_BLOCKED, &[&reg.namespace, &reg.name]).await?.is_some() {
        return Err(Error::Store(StoreError::blocked_worker(&reg.namespace, &reg.name)));
    }
    if let Some(h) = older.iter().find(|o| o.holds_against(reg, now))
        && !reg.replace
    {
        return Err(Error::Store(StoreError::NameHeld(Box::new(h.holder(&reg.name)))));
    }
    let taken: bool = one(tx, TAKEN, &[&reg.session.0, &reg.token_hash]).await?.try_get(0)?;
    if taken {
        return Err(exists(reg.session));
    }
    let mut lost = Vec::new();
    for old in &older {
        let why = if old.holds_against(reg, now) {
            LostCause::Replaced {
                name: reg.name.clone(),
                instance: reg.instance_id.clone(),
                host: reg.host.clone(),
            }
        } else {
            LostCause::Superseded { name: reg.name.clone() }
        };
        lost.extend(end_session(tx, old.session, &why, now).await?);
    }
    let concurrency = i32::try_from(reg.concurrency).unwrap_or(i32::MAX);
    let inserted = exec(
        tx,
        INSERT_WORKER,
        &[
            &reg.session.0,
            &reg.name,
            &reg.token_hash,
            &reg.host,
            &reg.profile,
            &reg.version,
            &reg.queues,
            &reg.tags,
            &concurrency,
            &reg.pid.map(i64::from),
            &now,
            &reg.instance_id,
            &reg.namespace,
        ],
    )
    .await;
    if let Err(e) = &inserted
        && e.unique_violation().is_some()
    {
        return Err(exists(reg.session));
    }
    inserted?;
    Ok(Registered { superseded: older.first().map(|o| SessionId(o.session)), lost })
}

fn exists(session: SessionId) -> Error {
    conflict(
        ConflictKind::Exists,
        format!("worker session {session} or its credential is already registered"),
    )
}

/// A session leaves: it goes offline and the attempts it still holds are lost.
pub(crate) async fn unregister_worker(
    tx: &Tx<'_>,
    session: SessionId,
    now: DateTime<Utc>,
) -> Result<Vec<LostAttempt>> {
    session_status(tx, session).await?.ok_or_else(|| not_found(format!("worker session {session}")))?;
    end_session(tx, session.0, &LostCause::SessionEnded, now).await
}

/// Sets a live session's queues; false if it is unknown or offline.
pub(crate) async fn set_worker_queues(tx: &Tx<'_>, session: SessionId, queues: &[String]) -> Result<bool> {
    let n = exec(
        tx,
        "UPDATE workers SET queues = $2 WHERE session = $1 AND status <> 'offline'",
        &[&session.0, &queues],
    )
    .await?;
    Ok(n > 0)
}

const IS_BLOCKED: &str = "SELECT 1 FROM blocked_workers WHERE namespace = $1 AND name = $2";
const KNOWN_NAME: &str = "SELECT 1 FROM workers WHERE namespace = $1 AND name = $2 LIMIT 1";
const SET_FORGOTTEN: &str = "UPDATE workers SET forgotten_at = $2 WHERE session = $1";
const BLOCK: &str =
    "INSERT INTO blocked_workers (namespace, name, blocked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const UNBLOCK: &str = "DELETE FROM blocked_workers WHERE namespace = $1 AND name = $2";
const FORGOTTEN_TOKEN: &str =
    "SELECT 1 FROM workers WHERE token_hash = $1 AND status = 'offline' AND forgotten_at IS NOT NULL";

/// Ends every live session of `name` as forgotten (offline, attempts lost, credential marked)
/// and blocks the name if asked. Under the name's registration lock, so a registration in
/// flight either ends first (and is forgotten here) or comes after (and sees the block).
pub(crate) async fn forget_worker(
    tx: &Tx<'_>,
    namespace: &str,
    name: &str,
    block: bool,
    now: DateTime<Utc>,
) -> Result<Forgotten> {
    one(tx, LOCK_NAME, &[&namespace, &name]).await?;
    let known = opt(tx, KNOWN_NAME, &[&namespace, &name]).await?.is_some();
    let live = rows(tx, LIVE_NAMESAKES, &[&name, &namespace])
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<_, Uuid>(0)?))
        .collect::<Result<Vec<_>>>()?;
    let why = LostCause::Forgotten { name: name.to_string() };
    let mut out = Forgotten { known, blocked: block, ..Forgotten::default() };
    for session in live {
        exec(tx, SET_FORGOTTEN, &[&session, &now]).await?;
        out.lost.extend(end_session(tx, session, &why, now).await?);
        out.sessions.push(SessionId(session));
    }
    if block {
        exec(tx, BLOCK, &[&namespace, &name, &now]).await?;
    }
    Ok(out)
}

/// Lets a blocked name register again; false if it was not blocked.
pub(crate) async fn unblock_worker(tx: &Tx<'_>, namespace: &str, name: &str) -> Result<bool> {
    Ok(exec(tx, UNBLOCK, &[&namespace, &name]).await? > 0)
}

/// Whether `token_hash` belongs to a forgotten session.
pub(crate) async fn is_forgotten(tx: &Tx<'_>, token_hash: &str) -> Result<bool> {
    Ok(opt(tx, FORGOTTEN_TOKEN, &[&token_hash]).await?.is_some())
}

async fn end_session(
    tx: &Tx<'_>,
    session: Uuid,
    why: &LostCause,
    now: DateTime<Utc>,
) -> Result<Vec<LostAttempt>> {
    // The row lock makes a claim in flight for this session finish first (it key-shares it).
    exec(tx, SET_OFFLINE, &[&session]).await?;
    let held = rows(tx, HELD_ATTEMPTS, &[&session])
        .await?
        .iter()
        .map(|r| Ok((JobId(r.try_get::<_, Uuid>(0)?), AttemptId(r.try_get(1)?))))
        .collect::<Result<Vec<_>>>()?;
    lose_all(tx, held, why, now, None).await
}

/// The live session whose credential hashes to `token_hash`.
pub(crate) async fn session_by_token(tx: &Tx<'_>, token_hash: &str) -> Result<Option<WorkerRecord>> {
    opt(tx, BY_TOKEN, &[&token_hash]).await?.as_ref().map(decode).transpose()
}

/// The latest session of every worker name, live ones first, then by name.
pub(crate) async fn list_workers(tx: &Tx<'_>) -> Result<Vec<WorkerRecord>> {
    rows(tx, LATEST_PER_NAME, &[]).await?.iter().map(decode).collect()
}

/// A session's stored status, if the session exists.
pub(crate) async fn session_status(tx: &Tx<'_>, session: SessionId) -> Result<Option<SessionStatus>> {
    match opt(tx, SESSION_STATUS, &[&session.0]).await? {
        Some(r) => Ok(Some(parse_status(r.try_get(0)?)?)),
        None => Ok(None),
    }
}

/// The stored name of a session status.
pub(crate) fn status_name(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Active => "active",
        SessionStatus::Draining => "draining",
        SessionStatus::Offline => "offline",
    }
}

fn parse_status(s: &str) -> Result<SessionStatus> {
    match s {
        "active" => Ok(SessionStatus::Active),
        "draining" => Ok(SessionStatus::Draining),
        "offline" => Ok(SessionStatus::Offline),
        other => Err(corrupt(format!("unknown worker status '{other}'"))),
    }
}

fn decode(r: &Row) -> Result<WorkerRecord> {
    Ok(WorkerRecord {
        session: SessionId(r.try_get(0)?),
        namespace: r.try_get(13)?,
        name: r.try_get(1)?,
        host: r.try_get(2)?,
        profile: r.try_get(3)?,
        version: r.try_get(4)?,
        queues: r.try_get(5)?,
        tags: r.try_get(6)?,
        concurrency: u32_of(i64::from(r.try_get::<_, i32>(7)?))?,
        status: parse_status(r.try_get(8)?)?,
        registered_at: r.try_get(9)?,
        last_heartbeat_at: r.try_get(10)?,
        running: u32_of(r.try_get(11)?)?,
        instance_id: r.try_get(12)?,
    })
}
