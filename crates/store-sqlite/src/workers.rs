//! Worker sessions: registration (superseding a live session of the same name, or refusing
//! the name while another instance holds it), leaving, lookup by credential and the fleet
//! listing. Attempts a session loses are ended through [`crate::attempts`]; nothing here
//! decides a step's fate.

use crate::attempts::{lose_attempt, select_attempts};
use crate::codec::{from_json, ms, session_id, time, to_json, u32_of};
use crate::error::{Error, Result, conflict, corrupt, not_found};
use chrono::{DateTime, Utc};
use rota_domain::{LostCause, SessionId};
use rota_store::ConflictKind;
use rota_store::{
    Forgotten, LostAttempt, NameHolder, Registered, SessionStatus, StoreError, WorkerRecord,
    WorkerRegistration,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row};

const INSERT_WORKER: &str = "INSERT INTO workers (session, name, token_hash, host, profile, version, queues, \
     tags, concurrency, status, pid, registered_at, last_heartbeat_at, instance_id, namespace) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?11, ?12, ?13)";

/// Sessions of a name not yet offline (stale ones included: they are superseded too).
/// Names are unique per namespace: `w1` of `a` and `w1` of `b` are two workers.
const LIVE_NAMESAKES: &str = "SELECT session, instance_id, host, last_heartbeat_at FROM workers \
     WHERE namespace = ?1 AND name = ?2 AND status <> 'offline' ORDER BY registered_at DESC, session DESC";

const SET_OFFLINE: &str = "UPDATE workers SET status = 'offline' WHERE session = ?1";

const SESSION_STATUS: &str = "SELECT status FROM workers WHERE session = ?1";

pub(crate) const HELD_ATTEMPTS: &str = "SELECT id, job_id, step, number, session, status, outcome, stop_cause \
     FROM attempts WHERE session = ?1 AND status = 'running' ORDER BY id";

// Both worker queries select the same columns, decoded by `RawWorker`.
pub(crate) const BY_TOKEN: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running'), w.instance_id, \
     w.namespace FROM workers w WHERE w.token_hash = ?1 AND w.status <> 'offline'";

const LATEST_PER_NAME: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running'), w.instance_id, \
     w.namespace FROM workers w \
     WHERE w.session = (SELECT w2.session FROM workers w2 WHERE w2.namespace = w.namespace AND w2.name = w.name \
         ORDER BY w2.registered_at DESC, w2.session DESC LIMIT 1) \
     ORDER BY w.status = 'offline', w.namespace, w.name";

/// A session of the registering name that has not gone offline.
struct Namesake {
    session: String,
    instance_id: Option<String>,
    host: String,
    last_heartbeat_at: i64,
}

impl Namesake {
    /// True if this session holds the name against `reg`: it is live (heard from within
    /// `stale_after`) and provably another instance (both sent an instance id, and the ids
    /// or the hosts differ). Sessions without an instance id prove nothing, so an upgrade
    /// (old session, new worker) and older workers keep superseding as before.
    fn holds_against(&self, reg: &WorkerRegistration, now: DateTime<Utc>) -> bool {
        let stale_after = i64::try_from(reg.stale_after.as_millis()).unwrap_or(i64::MAX);
        let live = ms(now).saturating_sub(self.last_heartbeat_at) <= stale_after;
        let other = match (&self.instance_id, &reg.instance_id) {
            (Some(theirs), Some(ours)) => theirs != ours || self.host != reg.host,
            _ => false,
        };
        live && other
    }

    fn holder(&self, name: &str) -> Result<NameHolder> {
        Ok(NameHolder {
            name: name.to_string(),
            session: session_id(&self.session)?,
            instance_id: self.instance_id.clone(),
            host: self.host.clone(),
            last_heartbeat_at: time(self.last_heartbeat_at)?,
        })
    }
}

/// Registers a session; a live session with the same name goes offline and loses its
/// attempts, unless another instance holds the name (then nothing is written and the
/// holder is named), see `JobStore::register_worker`.
pub(crate) fn register_worker(
    conn: &Connection,
    reg: &WorkerRegistration,
    now: DateTime<Utc>,
) -> Result<Registered> {
    let older: Vec<Namesake> = conn
        .prepare_cached(LIVE_NAMESAKES)?
        .query_map([&reg.namespace, &reg.name], |r| {
            Ok(Namesake {
                session: r.get(0)?,
                instance_id: r.get(1)?,
                host: r.get(2)?,
                last_heartbeat_at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Checked before anything is written, so a refusal changes nothing.
    if conn.prepare_cached(IS_BLOCKED)?.exists([&reg.namespace, &reg.name])? {
        return Err(Error::Store(StoreError::blocked_worker(&reg.namespace, &reg.name)));
    }
    let holder = older.iter().find(|o| o.holds_against(reg, now));
    if let Some(h) = holder
        && !reg.replace
    {
        return Err(Error::Store(StoreError::NameHeld(Box::new(h.holder(&reg.name)?))));
    }
    let session = reg.session.to_string();
    let inserted = conn.prepare_cached(INSERT_WORKER)?.execute((
        &session,
        &reg.name,
        &reg.token_hash,
        &reg.host,
        &reg.profile,
        &reg.version,
        to_json(&reg.queues)?,
        to_json(&reg.tags)?,
        i64::from(reg.concurrency),
        reg.pid.map(i64::from),
        ms(now),
        &reg.instance_id,
        &reg.namespace,
    ));
    if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
        && e.code == ErrorCode::ConstraintViolation
    {
        return Err(conflict(
            ConflictKind::Exists,
            format!("worker session {session} or its credential is already registered"),
        ));
    }
    inserted?;
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
        lost.extend(end_session(conn, &old.session, &why, now)?);
    }
    let superseded = older.first().map(|o| session_id(&o.session)).transpose()?;
    Ok(Registered { superseded, lost })
}

const IS_BLOCKED: &str = "SELECT 1 FROM blocked_workers WHERE namespace = ?1 AND name = ?2";
const KNOWN_NAME: &str = "SELECT 1 FROM workers WHERE namespace = ?1 AND name = ?2 LIMIT 1";
const SET_FORGOTTEN: &str = "UPDATE workers SET forgotten_at = ?2 WHERE session = ?1";
const BLOCK: &str =
    "INSERT INTO blocked_workers (namespace, name, blocked_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
const UNBLOCK: &str = "DELETE FROM blocked_workers WHERE namespace = ?1 AND name = ?2";
const FORGOTTEN_TOKEN: &str =
    "SELECT 1 FROM workers WHERE token_hash = ?1 AND status = 'offline' AND forgotten_at IS NOT NULL";

/// Ends every live session of `name` as forgotten (offline, attempts lost, credential marked)
/// and blocks the name if asked.
pub(crate) fn forget_worker(
    conn: &Connection,
    namespace: &str,
    name: &str,
    block: bool,
    now: DateTime<Utc>,
) -> Result<Forgotten> {
    let known = conn.prepare_cached(KNOWN_NAME)?.exists([namespace, name])?;
    let live: Vec<String> = conn
        .prepare_cached(LIVE_NAMESAKES)?
        .query_map([namespace, name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let why = LostCause::Forgotten { name: name.to_string() };
    let mut out = Forgotten { known, blocked: block, ..Forgotten::default() };
    for session in &live {
        conn.prepare_cached(SET_FORGOTTEN)?.execute((session, ms(now)))?;
        out.lost.extend(end_session(conn, session, &why, now)?);
        out.sessions.push(session_id(session)?);
    }
    if block {
        conn.prepare_cached(BLOCK)?.execute((namespace, name, ms(now)))?;
    }
    Ok(out)
}

/// Lets a blocked name register again; false if it was not blocked.
pub(crate) fn unblock_worker(conn: &Connection, namespace: &str, name: &str) -> Result<bool> {
    Ok(conn.prepare_cached(UNBLOCK)?.execute([namespace, name])? > 0)
}

/// Whether `token_hash` belongs to a forgotten session.
pub(crate) fn is_forgotten(conn: &Connection, token_hash: &str) -> Result<bool> {
    Ok(conn.prepare_cached(FORGOTTEN_TOKEN)?.exists([token_hash])?)
}

/// A session leaves: it goes offline and the attempts it still holds are lost.
pub(crate) fn unregister_worker(
    conn: &Connection,
    session: SessionId,
    now: DateTime<Utc>,
) -> Result<Vec<LostAttempt>> {
    let id = session.to_string();
    conn.prepare_cached(SESSION_STATUS)?
        .query_row([&id], |r| r.get::<_, String>(0))
        .optional()?
        .ok_or_else(|| not_found(format!("worker session {session}")))?;
    end_session(conn, &id, &LostCause::SessionEnded, now)
}

/// Sets a live session's queues; false if it is unknown or offline.
pub(crate) fn set_worker_queues(conn: &Connection, session: SessionId, queues: &[String]) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE workers SET queues = ?2 WHERE session = ?1 AND status <> 'offline'")?
        .execute(rusqlite::params![session.to_string(), to_json(&queues)?])?;
    Ok(n > 0)
}

fn end_session(
    conn: &Connection,
    session: &str,
    why: &LostCause,
    now: DateTime<Utc>,
) -> Result<Vec<LostAttempt>> {
    conn.prepare_cached(SET_OFFLINE)?.execute([session])?;
    let held = select_attempts(conn, HELD_ATTEMPTS, [session])?;
    held.iter().map(|a| lose_attempt(conn, a, why, now)).collect()
}

/// The live session whose credential hashes to `token_hash`.
pub(crate) fn session_by_token(conn: &Connection, token_hash: &str) -> Result<Option<WorkerRecord>> {
    let raw = conn.prepare_cached(BY_TOKEN)?.query_row([token_hash], RawWorker::read).optional()?;
    raw.map(RawWorker::decode).transpose()
}

/// The latest session of every worker name, live ones first, then by name.
pub(crate) fn list_workers(conn: &Connection) -> Result<Vec<WorkerRecord>> {
    let raws = conn
        .prepare_cached(LATEST_PER_NAME)?
        .query_map([], RawWorker::read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawWorker::decode).collect()
}

/// A session's stored status, if the session exists.
pub(crate) fn session_status(conn: &Connection, session: SessionId) -> Result<Option<SessionStatus>> {
    let s: Option<String> =
        conn.prepare_cached(SESSION_STATUS)?.query_row([session.to_string()], |r| r.get(0)).optional()?;
    s.as_deref().map(parse_status).transpose()
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

struct RawWorker {
    session: String,
    name: String,
    host: String,
    profile: Option<String>,
    version: String,
    queues: String,
    tags: String,
    concurrency: i64,
    status: String,
    registered_at: i64,
    last_heartbeat_at: i64,
    running: i64,
    instance_id: Option<String>,
    namespace: String,
}

impl RawWorker {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            session: r.get(0)?,
            name: r.get(1)?,
            host: r.get(2)?,
            profile: r.get(3)?,
            version: r.get(4)?,
            queues: r.get(5)?,
            tags: r.get(6)?,
            concurrency: r.get(7)?,
            status: r.get(8)?,
            registered_at: r.get(9)?,
            last_heartbeat_at: r.get(10)?,
            running: r.get(11)?,
            instance_id: r.get(12)?,
            namespace: r.get(13)?,
        })
    }

    fn decode(self) -> Result<WorkerRecord> {
        Ok(WorkerRecord {
            session: session_id(&self.session)?,
            namespace: self.namespace,
            name: self.name,
            host: self.host,
            profile: self.profile,
            version: self.version,
            queues: from_json(&self.queues)?,
            tags: from_json(&self.tags)?,
            concurrency: u32_of(self.concurrency)?,
            status: parse_status(&self.status)?,
            registered_at: time(self.registered_at)?,
            last_heartbeat_at: time(self.last_heartbeat_at)?,
            running: u32_of(self.running)?,
            instance_id: self.instance_id,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::schema::{MAIN, migrate, open_writer};
    use crate::{SqliteOptions, SqliteStore};
    use rota_store::{JobStore, SessionStatus, WorkerRegistration};
    use std::time::Duration;

    /// Migration 4 (`instance_id`) on a database written by schema 3: the sessions stored
    /// before keep working, have no instance id, and are superseded by upgraded workers.
    #[tokio::test]
    async fn sessions_stored_before_instance_ids_survive_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let before = &MAIN[..3];
        assert_eq!(before.last().map(|m| m.name), Some("partial_indexes"), "schema 3 is the one before");
        let now = chrono::Utc::now();
        let old_session = rota_domain::SessionId::new();
        {
            let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, before, &path).unwrap();
            conn.execute(
                "INSERT INTO workers (session, name, token_hash, host, profile, version, queues, tags, \
                 concurrency, status, pid, registered_at, last_heartbeat_at) \
                 VALUES (?1, 'vm', 'old-hash', 'h1', NULL, '0.1', '[\"default\"]', '[]', 2, 'active', 7, ?2, ?2)",
                (old_session.to_string(), now.timestamp_millis()),
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let old = store.session_by_token("old-hash").await.unwrap().expect("the old session is still live");
        assert_eq!((old.session, old.instance_id), (old_session, None));

        let session = rota_domain::SessionId::new();
        let reg = WorkerRegistration {
            session,
            namespace: "default".into(),
            token_hash: "new-hash".into(),
            name: "vm".into(),
            host: "h1".into(),
            profile: None,
            version: "test".into(),
            queues: vec!["default".into()],
            tags: vec![],
            concurrency: 2,
            pid: None,
            instance_id: Some("inst-a".into()),
            replace: false,
            stale_after: Duration::from_secs(30),
        };
        let r = store.register_worker(reg, now).await.unwrap();
        assert_eq!(r.superseded, Some(old_session), "a session without an instance id is superseded");
        let listed = store.list_workers().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].session, listed[0].status, listed[0].instance_id.as_deref()),
            (session, SessionStatus::Active, Some("inst-a"))
        );
    }
}
