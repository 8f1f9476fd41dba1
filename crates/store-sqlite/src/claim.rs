//! Claiming ready steps for a worker session: pick by priority then age, create attempts
//! already marked running with a lease. Each of the worker's queues is read in index order
//! and the heads are merged here, so no claim sorts the backlog. Tags are checked with
//! `Target::admits`; refused rows are paged past so they never starve the rest.

use crate::codec::{from_json, ms, ms_after, u32_of};
use crate::error::{Result, corrupt, not_found};
use crate::spec_cache;
use chrono::{DateTime, Utc};
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{AttemptId, JobId, JobSpec, SessionId, Target};
use rota_store::ClaimedAttempt;
use rusqlite::{Connection, OptionalExtension};
use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Rows read per query at most. A page asks for what the claim still needs plus the rows
/// refused so far (tags), so a claim for one slot reads one row, not a full page.
const PAGE: i64 = 64;

const SELECT_WORKER: &str =
    "SELECT name, host, queues, tags, status, namespace FROM workers WHERE session = ?1";

// One queue at a time, so `steps_claim` yields rows already in claim order. The job's own
// state and deadline are checked so nothing starts once it has ended or its deadline
// passed, even before the sweeper gets to it.
// The rows' rowids let the claim's updates find them without searching the text keys again
// (valid for the claim's own transaction, which is all they are used for).
pub(crate) const CANDIDATES: &str =
    "SELECT s.job_id, s.name, s.idx, s.priority, s.attempts_count, s.target_host, \
     s.target_tags, s.rowid, j.rowid FROM steps s JOIN jobs j ON j.id = s.job_id
     WHERE s.state = 'ready'
       AND s.namespace = ?7
       AND s.queue = ?2
       AND (s.run_after IS NULL OR s.run_after <= ?1)
       AND (s.target_host IS NULL OR s.target_host = ?3 OR s.target_host = ?4)
       AND j.state IN ('queued', 'running')
       AND (j.deadline IS NULL OR j.deadline >= ?1)
     ORDER BY s.priority DESC, s.job_id ASC, s.idx ASC
     LIMIT ?5 OFFSET ?6";

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (job_id, step, number, session, worker_name, status, \
     lease_expires_at, started_at) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7)";

// By rowid (from CANDIDATES, same transaction): an integer seek where the primary keys
// were a search over 36-character text keys, twice per claimed step.
const STEP_RUNNING: &str = "UPDATE steps SET state = 'running', attempts_count = ?2, run_after = NULL, \
     reason = NULL WHERE rowid = ?1";

const JOB_RUNNING: &str = "UPDATE jobs SET state = 'running' WHERE rowid = ?1 AND state = 'queued'";

/// What a needed step's succeeded attempt wrote to `$ROTA_OUTPUT`.
const NEEDED_OUTPUTS: &str = "SELECT outputs FROM attempts WHERE job_id = ?1 AND step = ?2 \
     AND status = 'succeeded' AND outputs IS NOT NULL ORDER BY id DESC LIMIT 1";

struct ClaimingWorker {
    namespace: String,
    name: String,
    host: String,
    queues: Vec<String>,
    tags: Vec<String>,
}

struct Candidate {
    job_id: String,
    step: String,
    idx: i64,
    priority: i64,
    attempts: i64,
    target: Target,
    /// The step's and the job's rowids, for this transaction's updates.
    step_row: i64,
    job_row: i64,
}

impl Candidate {
    /// Claim order: priority first, then age (UUID v7 text order), then document order.
    fn order(&self) -> (Reverse<i64>, &str, i64) {
        (Reverse(self.priority), &self.job_id, self.idx)
    }
}

/// The ready rows of one queue, read a page at a time.
struct QueueScan<'a> {
    queue: &'a str,
    buffered: VecDeque<Candidate>,
    /// Rows refused so far: they stay ready, so the next page starts after them. Claimed
    /// rows leave the result set by themselves.
    refused: i64,
    done: bool,
}

/// Claims up to `max` steps for an active session (none for a draining or offline one).
pub(crate) fn claim(
    conn: &Connection,
    session: SessionId,
    max: u32,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Vec<ClaimedAttempt>> {
    let Some(worker) = load_claiming_worker(conn, session)? else {
        return Ok(Vec::new());
    };
    let max = max as usize;
    // Paused queues are skipped here, inside the writer, so a pause that committed is never
    // raced by a claim.
    let paused = crate::fleet::paused_queues(conn, &worker.namespace)?;
    let mut queues: Vec<&str> =
        worker.queues.iter().map(String::as_str).filter(|q| !paused.iter().any(|p| p == q)).collect();
    queues.sort_unstable();
    queues.dedup();
    let mut scans: Vec<QueueScan<'_>> = queues
        .into_iter()
        .map(|queue| QueueScan { queue, buffered: VecDeque::new(), refused: 0, done: false })
        .collect();
    let mut specs: HashMap<String, Arc<JobSpec>> = HashMap::new();
    let mut out = Vec::new();
    while out.len() < max {
        let wanted = (max - out.len()) as i64;
        for scan in scans.iter_mut().filter(|s| s.buffered.is_empty() && !s.done) {
            let limit = (wanted + scan.refused).clamp(1, PAGE);
            let page = candidates(conn, now, scan.queue, &worker, scan.refused, limit)?;
            scan.done = (page.len() as i64) < limit;
            scan.buffered = page.into();
        }
        let best = scans
            .iter_mut()
            .filter(|s| !s.buffered.is_empty())
            .min_by(|a, b| a.buffered[0].order().cmp(&b.buffered[0].order()));
        let Some(scan) = best else { break };
        let Some(c) = scan.buffered.pop_front() else { break };
        if !c.target.admits(&worker.name, &worker.host, &worker.tags) {
            scan.refused += 1;
            continue;
        }
        let queue = scan.queue.to_string();
        out.push(claim_one(conn, c, queue, session, &worker, now, ttl, &mut specs)?);
    }
    Ok(out)
}

/// The session's worker if it may claim; `NotFound` if the session is unknown.
fn load_claiming_worker(conn: &Connection, session: SessionId) -> Result<Option<ClaimingWorker>> {
    let row = conn
        .prepare_cached(SELECT_WORKER)?
        .query_row([session.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .optional()?
        .ok_or_else(|| not_found(format!("worker session {session}")))?;
    let (name, host, queues, tags, status, namespace) = row;
    if status != "active" {
        return Ok(None);
    }
    Ok(Some(ClaimingWorker { namespace, name, host, queues: from_json(&queues)?, tags: from_json(&tags)? }))
}

fn candidates(
    conn: &Connection,
    now: DateTime<Utc>,
    queue: &str,
    w: &ClaimingWorker,
    offset: i64,
    limit: i64,
) -> Result<Vec<Candidate>> {
    let mut st = conn.prepare_cached(CANDIDATES)?;
    let mut rows = st.query((ms(now), queue, &w.host, &w.name, limit, offset, &w.namespace))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let tags: String = r.get(6)?;
        out.push(Candidate {
            job_id: r.get(0)?,
            step: r.get(1)?,
            idx: r.get(2)?,
            priority: r.get(3)?,
            attempts: r.get(4)?,
            target: Target { host: r.get(5)?, tags: from_json(&tags)? },
            step_row: r.get(7)?,
            job_row: r.get(8)?,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn claim_one(
    conn: &Connection,
    c: Candidate,
    queue: String,
    session: SessionId,
    worker: &ClaimingWorker,
    now: DateTime<Utc>,
    ttl: Duration,
    specs: &mut HashMap<String, Arc<JobSpec>>,
) -> Result<ClaimedAttempt> {
    let job_id: JobId = crate::codec::job_id(&c.job_id)?;
    let number = c.attempts + 1;
    conn.prepare_cached(INSERT_ATTEMPT)?.execute((
        &c.job_id,
        &c.step,
        number,
        session.to_string(),
        &worker.name,
        ms_after(now, ttl),
        ms(now),
    ))?;
    let attempt_id = AttemptId(conn.last_insert_rowid());
    conn.prepare_cached(STEP_RUNNING)?.execute((c.step_row, number))?;
    conn.prepare_cached(JOB_RUNNING)?.execute([c.job_row])?;
    if !specs.contains_key(&c.job_id) {
        specs.insert(c.job_id.clone(), spec_cache::spec(conn, job_id)?);
    }
    let spec = specs.get(&c.job_id).ok_or_else(|| corrupt("job document vanished"))?;
    let step = spec
        .steps
        .iter()
        .find(|s| s.name == c.step)
        .ok_or_else(|| corrupt(format!("job {job_id} has no step '{}'", c.step)))?;
    // Secret references stay references: the server resolves them for this attempt.
    let rota_domain::secret::SplitEnv { plain: mut env, secrets: secret_env } = spec.step_env(step);
    if !step.needs.is_empty() {
        let mut needed = Vec::new();
        for n in &step.needs {
            let text: Option<String> =
                conn.prepare_cached(NEEDED_OUTPUTS)?.query_row((&c.job_id, n), |r| r.get(0)).optional()?;
            if let Some(text) = text {
                needed.push((n.as_str(), from_json::<std::collections::BTreeMap<String, String>>(&text)?));
            }
        }
        env.extend(rota_domain::workflow::needed_outputs_env(needed.iter().map(|(n, o)| (*n, o))));
    }
    Ok(ClaimedAttempt {
        attempt_id,
        job_id,
        namespace: worker.namespace.clone(),
        step: c.step,
        number: u32_of(number)?,
        run: step.run.clone(),
        env,
        secret_env,
        timeout: step.timeout,
        memory_limit: step.memory_limit,
        keep_workspace: step.keep_workspace,
        log_cap: step.log_cap.unwrap_or(DEFAULT_LOG_CAP),
        queue,
    })
}
