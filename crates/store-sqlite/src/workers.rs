//! Worker sessions: registration (superseding a live session of the same name), leaving,
//! lookup by credential and the fleet listing. Attempts a session loses are ended through
//! [`crate::attempts`]; nothing here decides a step's fate.

use crate::attempts::{lose_attempt, select_attempts};
use crate::codec::{from_json, ms, session_id, time, to_json, u32_of};
use crate::error::{Result, conflict, corrupt, not_found};
use chrono::{DateTime, Utc};
use rota_domain::SessionId;
use rota_store::{LostAttempt, Registered, SessionStatus, WorkerRecord, WorkerRegistration};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row};

const INSERT_WORKER: &str = "INSERT INTO workers (session, name, token_hash, host, profile, version, queues, \
     tags, concurrency, status, pid, registered_at, last_heartbeat_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?11)";

const LIVE_NAMESAKES: &str = "SELECT session FROM workers WHERE name = ?1 AND session <> ?2 \
     AND status <> 'offline' ORDER BY registered_at DESC, session DESC";

const SET_OFFLINE: &str = "UPDATE workers SET status = 'offline' WHERE session = ?1";

const SESSION_STATUS: &str = "SELECT status FROM workers WHERE session = ?1";

pub(crate) const HELD_ATTEMPTS: &str = "SELECT id, job_id, step, number, session, status, outcome, stop_cause \
     FROM attempts WHERE session = ?1 AND status = 'running' ORDER BY id";

// Both worker queries select the same columns, decoded by `RawWorker`.
pub(crate) const BY_TOKEN: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running') \
     FROM workers w WHERE w.token_hash = ?1 AND w.status <> 'offline'";

const LATEST_PER_NAME: &str = "SELECT w.session, w.name, w.host, w.profile, w.version, w.queues, w.tags, \
     w.concurrency, w.status, w.registered_at, w.last_heartbeat_at, \
     (SELECT COUNT(*) FROM attempts a WHERE a.session = w.session AND a.status = 'running') \
     FROM workers w \
     WHERE w.session = (SELECT w2.session FROM workers w2 WHERE w2.name = w.name \
         ORDER BY w2.registered_at DESC, w2.session DESC LIMIT 1) \
     ORDER BY w.status = 'offline', w.name";

/// Registers a session; a live session with the same name goes offline and loses its attempts.
pub(crate) fn register_worker(
    conn: &Connection,
    reg: &WorkerRegistration,
    now: DateTime<Utc>,
) -> Result<Registered> {
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
    ));
    if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
        && e.code == ErrorCode::ConstraintViolation
    {
        return Err(conflict(format!("worker session {session} or its credential is already registered")));
    }
    inserted?;
    let older: Vec<String> = conn
        .prepare_cached(LIVE_NAMESAKES)?
        .query_map((&reg.name, &session), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let why = format!("superseded by a new session of {}", reg.name);
    let mut lost = Vec::new();
    for old in &older {
        lost.extend(end_session(conn, old, &why, now)?);
    }
    let superseded = older.first().map(|s| session_id(s)).transpose()?;
    Ok(Registered { superseded, lost })
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
    end_session(conn, &id, "worker session ended", now)
}

fn end_session(conn: &Connection, session: &str, why: &str, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
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
        })
    }

    fn decode(self) -> Result<WorkerRecord> {
        Ok(WorkerRecord {
            session: session_id(&self.session)?,
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
        })
    }
}
