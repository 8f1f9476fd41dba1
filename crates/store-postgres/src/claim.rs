//! Claiming ready steps for a worker session: each of its queues is read in the order of
//! the partial index on ready steps (priority, then age) with `FOR UPDATE SKIP LOCKED`, a
//! page the size of the free slots at a time, and the heads are merged here, so no claim
//! sorts the backlog and concurrent claims pass over each other's rows. Attempts are
//! created already running with a lease. Paused queues, revokes (the job's state),
//! deadlines, targets and tags are honoured inside the claim's transaction: the target host
//! is filtered in SQL, then every row is checked with `Target::admits` (the domain's rule;
//! tags are not filtered in SQL, whose row estimate for them made the planner sort the
//! backlog), rows it refuses are paged past so they never starve the rest.
//!
//! The statements are set-based: the heads a round picks have their job rows locked in
//! one statement (job id order, `SKIP LOCKED`; the documents the cache lacks come back
//! with it), and the round's attempts, steps and jobs are written with one statement each
//! over arrays, sent together. A claim of 8 is a handful of round trips, not two per job.

use crate::codec::{after, u32_of};
use crate::error::{Result, corrupt, not_found};
use crate::tx::{Tx, exec, one, opt, rows};
use chrono::{DateTime, Utc};
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{AttemptId, JobId, JobSpec, SessionId, Target};
use rota_store::ClaimedAttempt;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

/// Rows read per query at most.
const PAGE: i64 = 64;

/// Claims take this advisory lock shared, pauses take it exclusive: a pause that committed
/// is seen by every claim that starts after it, and waits for the ones in flight.
pub(crate) const CLAIM_LOCK: i64 = 0x726f_7461_0002;

const SHARE_CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock_shared($1)";

// The row is key-share locked so a supersession or unregister of the session (which locks
// it `FOR UPDATE`, `workers::end_session`) waits for the claim, and then loses the attempts it
// made. Not `FOR SHARE`: that conflicts with the heartbeat's `UPDATE workers` (a no-key
// update), and under a stream of overlapping claims and completions the heartbeat starved
// behind their share locks (PostgreSQL lets new sharers past a waiting updater) until the
// session's leases ran out and its running attempts were re-run (seen in the soak).
const SELECT_WORKER: &str =
    "SELECT name, host, queues, tags, status, namespace FROM workers WHERE session = $1 FOR KEY SHARE";

// By session, not namespace, so it goes out with the worker's read (pipelined).
const PAUSED: &str =
    "SELECT queue FROM paused_queues WHERE namespace = (SELECT namespace FROM workers WHERE session = $1)";

// The job's own state and deadline are checked so nothing starts once it has ended or its
// deadline passed, even before the sweeper gets to it.
pub(crate) const CANDIDATES: &str =
    "SELECT s.job_id, s.name, s.queue, s.attempts_count, s.target_host, s.target_tags, \
     s.priority, s.idx FROM steps s JOIN jobs j ON j.id = s.job_id
     WHERE s.state = 'ready'
       AND s.namespace = $7
       AND s.queue = $2
       AND (s.run_after IS NULL OR s.run_after <= $1)
       AND (s.target_host IS NULL OR s.target_host = $3 OR s.target_host = $4)
       AND j.state IN ('queued', 'running')
       AND (j.deadline IS NULL OR j.deadline >= $1)
     ORDER BY s.priority DESC, s.job_id ASC, s.idx ASC
     LIMIT $5 OFFSET $6
     FOR UPDATE OF s SKIP LOCKED";

// One row per claimed step, in claim order (`ord`), so attempt ids rise in claim order.
const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (job_id, step, number, session, worker_name, status, \
     lease_expires_at, started_at) \
     SELECT t.job_id, t.step, t.number, $4, $5, 'running', $6, $7 \
     FROM unnest($1::uuid[], $2::text[], $3::int4[]) WITH ORDINALITY AS t(job_id, step, number, ord) \
     ORDER BY t.ord RETURNING id, job_id, step";

const STEPS_RUNNING: &str = "UPDATE steps s SET state = 'running', attempts_count = t.number, \
     run_after = NULL, reason = NULL \
     FROM unnest($1::uuid[], $2::text[], $3::int4[]) AS t(job_id, step, number) \
     WHERE s.job_id = t.job_id AND s.name = t.step";

// The job rows are locked without waiting: a job being cancelled, revoked or settled holds
// its row (and may wait for this claim's step row), so its step is passed over this time
// rather than deadlocking; it is claimable again once that commits. Locked in id order, as
// every statement that locks several job rows does. Returns the current state, and the
// document of the jobs in $2 (those the cache lacks).
const LOCK_JOBS: &str = "SELECT id, state, CASE WHEN id = ANY($2) THEN spec END FROM jobs \
     WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED";

const JOBS_RUNNING: &str = "UPDATE jobs SET state = 'running' WHERE id = ANY($1) AND state = 'queued'";

/// What a needed step's succeeded attempt wrote to `$ROTA_OUTPUT`.
const NEEDED_OUTPUTS: &str = "SELECT outputs FROM attempts WHERE job_id = $1 AND step = $2 \
     AND status = 'succeeded' AND outputs IS NOT NULL ORDER BY id DESC LIMIT 1";

struct ClaimingWorker {
    namespace: String,
    name: String,
    host: String,
    queues: Vec<String>,
    tags: Vec<String>,
}

struct Candidate {
    job_id: Uuid,
    step: String,
    queue: String,
    attempts: i32,
    target: Target,
    priority: i32,
    idx: i32,
}

impl Candidate {
    /// Claim order: priority first, then age (UUID v7 order), then document order.
    fn order(&self) -> (Reverse<i32>, Uuid, i32) {
        (Reverse(self.priority), self.job_id, self.idx)
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

/// For a transaction that ends attempts before it claims (a completion that claims for the
/// freed slots): takes the claim lock shared, as every claim does first (again in the same
/// transaction costs nothing), then locks the session's worker row as a claim does
/// (`SELECT_WORKER`, key share). An unregister or supersession locks the worker row, then the
/// session's attempt rows, so a completion locking attempt rows first and the worker row
/// after could deadlock with it; taken first, the order is theirs. One round trip: the two
/// are pipelined, and the server runs them in the order sent.
pub(crate) async fn share_claim_lock_and_worker(tx: &Tx<'_>, session: SessionId) -> Result<()> {
    for sql in [SHARE_CLAIM_LOCK, SHARE_WORKER] {
        tx.prepare_cached(sql).await?;
    }
    let (lock_params, worker_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
        ([&CLAIM_LOCK], [&session.0]);
    tokio::try_join!(one(tx, SHARE_CLAIM_LOCK, &lock_params), rows(tx, SHARE_WORKER, &worker_params))
        .map(drop)
}

const SHARE_WORKER: &str = "SELECT 1 FROM workers WHERE session = $1 FOR KEY SHARE";

/// Claims up to `max` steps for an active session (none for a draining or offline one).
pub(crate) async fn claim(
    tx: &Tx<'_>,
    session: SessionId,
    max: u32,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Vec<ClaimedAttempt>> {
    // Pipelined (sent together, run in the order sent): the lock is taken, then the worker
    // and its namespace's paused queues are read, in one round trip. Each statement is
    // prepared first: one still being prepared would be sent after the others.
    for sql in [SHARE_CLAIM_LOCK, SELECT_WORKER, PAUSED] {
        tx.prepare_cached(sql).await?;
    }
    let (lock_params, paused_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
        ([&CLAIM_LOCK], [&session.0]);
    let (_, worker, paused) = tokio::try_join!(
        one(tx, SHARE_CLAIM_LOCK, &lock_params),
        load_claiming_worker(tx, session),
        rows(tx, PAUSED, &paused_params),
    )?;
    let Some(worker) = worker else {
        return Ok(Vec::new());
    };
    let paused: Vec<String> = paused.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    let mut queues: Vec<&str> =
        worker.queues.iter().map(String::as_str).filter(|q| !paused.iter().any(|p| p == q)).collect();
    queues.sort_unstable();
    queues.dedup();
    let mut scans: Vec<QueueScan<'_>> = queues
        .into_iter()
        .map(|queue| QueueScan { queue, buffered: VecDeque::new(), refused: 0, done: false })
        .collect();
    let max = max as usize;
    let mut specs: HashMap<Uuid, Arc<JobSpec>> = HashMap::new();
    let mut out = Vec::new();
    while out.len() < max {
        let wanted = max - out.len();
        for scan in scans.iter_mut().filter(|s| s.buffered.is_empty() && !s.done) {
            let limit = (wanted as i64 + scan.refused).clamp(1, PAGE);
            let page = candidates(tx, now, scan.queue, &worker, scan.refused, limit).await?;
            scan.done = (page.len() as i64) < limit;
            scan.buffered = page.into();
        }
        // A round: the merged heads in claim order that the target admits, up to what is
        // still wanted. It ends early when a scan that may hold more rows runs dry: its
        // next page is read once this round's claims are written (they leave its result
        // set then, and `refused` counts the rest).
        let mut round: Vec<(usize, Candidate)> = Vec::new();
        let mut dry = false;
        while round.len() < wanted && !dry {
            let best = scans
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.buffered.is_empty())
                .min_by(|(_, a), (_, b)| a.buffered[0].order().cmp(&b.buffered[0].order()));
            let Some((i, scan)) = best else { break };
            let Some(c) = scan.buffered.pop_front() else { break };
            if c.target.admits(&worker.name, &worker.host, &worker.tags) {
                round.push((i, c));
            } else {
                scan.refused += 1;
            }
            dry = scan.buffered.is_empty() && !scan.done;
        }
        if round.is_empty() {
            if dry {
                continue;
            }
            break;
        }
        let live = lock_live_jobs(tx, &round, &mut specs).await?;
        let mut claimed = Vec::with_capacity(round.len());
        for (i, c) in round {
            if live.contains(&c.job_id) {
                claimed.push(c);
            } else if let Some(scan) = scans.get_mut(i) {
                scan.refused += 1;
            }
        }
        out.extend(claim_all(tx, claimed, session, &worker, now, ttl, &specs).await?);
    }
    Ok(out)
}

/// Locks the job rows of a round's candidates, in job id order, passing over rows another
/// transaction holds; returns the jobs locked that may still start steps. Documents the
/// cache lacks are read in the same statement into `specs`.
async fn lock_live_jobs(
    tx: &Tx<'_>,
    round: &[(usize, Candidate)],
    specs: &mut HashMap<Uuid, Arc<JobSpec>>,
) -> Result<HashSet<Uuid>> {
    let mut ids: Vec<Uuid> = round.iter().map(|(_, c)| c.job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut missing = Vec::new();
    for id in &ids {
        if specs.contains_key(id) {
            continue;
        }
        match crate::spec_cache::cached(JobId(*id)) {
            Some(spec) => {
                specs.insert(*id, spec);
            }
            None => missing.push(*id),
        }
    }
    let mut live = HashSet::with_capacity(ids.len());
    for r in rows(tx, LOCK_JOBS, &[&ids, &missing]).await? {
        let id: Uuid = r.try_get(0)?;
        let state: &str = r.try_get(1)?;
        if let Some(Json(spec)) = r.try_get::<_, Option<Json<JobSpec>>>(2)? {
            let spec = Arc::new(spec);
            crate::spec_cache::remember(JobId(id), spec.clone());
            specs.insert(id, spec);
        }
        if matches!(state, "queued" | "running") {
            live.insert(id);
        }
    }
    Ok(live)
}

/// The session's worker if it may claim; `NotFound` if the session is unknown.
async fn load_claiming_worker(tx: &Tx<'_>, session: SessionId) -> Result<Option<ClaimingWorker>> {
    let r = opt(tx, SELECT_WORKER, &[&session.0])
        .await?
        .ok_or_else(|| not_found(format!("worker session {session}")))?;
    let status: &str = r.try_get(4)?;
    if status != "active" {
        return Ok(None);
    }
    Ok(Some(ClaimingWorker {
        namespace: r.try_get(5)?,
        name: r.try_get(0)?,
        host: r.try_get(1)?,
        queues: r.try_get(2)?,
        tags: r.try_get(3)?,
    }))
}

async fn candidates(
    tx: &Tx<'_>,
    now: DateTime<Utc>,
    queue: &str,
    w: &ClaimingWorker,
    offset: i64,
    limit: i64,
) -> Result<Vec<Candidate>> {
    rows(tx, CANDIDATES, &[&now, &queue, &w.host, &w.name, &limit, &offset, &w.namespace])
        .await?
        .iter()
        .map(|r| {
            Ok(Candidate {
                job_id: r.try_get(0)?,
                step: r.try_get(1)?,
                queue: r.try_get(2)?,
                attempts: r.try_get(3)?,
                target: Target { host: r.try_get(4)?, tags: r.try_get(5)? },
                priority: r.try_get(6)?,
                idx: r.try_get(7)?,
            })
        })
        .collect()
}

/// Writes a round's claims, one statement per table sent together (PostgreSQL runs them in
/// the order sent), then builds each attempt's hand-out in claim order.
async fn claim_all(
    tx: &Tx<'_>,
    claimed: Vec<Candidate>,
    session: SessionId,
    worker: &ClaimingWorker,
    now: DateTime<Utc>,
    ttl: Duration,
    specs: &HashMap<Uuid, Arc<JobSpec>>,
) -> Result<Vec<ClaimedAttempt>> {
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let lease = after(now, ttl);
    let jobs: Vec<Uuid> = claimed.iter().map(|c| c.job_id).collect();
    let steps: Vec<&str> = claimed.iter().map(|c| c.step.as_str()).collect();
    let numbers: Vec<i32> = claimed.iter().map(|c| c.attempts + 1).collect();
    // Each statement is prepared first: one still being prepared would be sent after the others.
    for sql in [INSERT_ATTEMPTS, STEPS_RUNNING, JOBS_RUNNING] {
        tx.prepare_cached(sql).await?;
    }
    let attempt_params: [&(dyn ToSql + Sync); 7] =
        [&jobs, &steps, &numbers, &session.0, &worker.name, &lease, &now];
    let step_params: [&(dyn ToSql + Sync); 3] = [&jobs, &steps, &numbers];
    let job_params: [&(dyn ToSql + Sync); 1] = [&jobs];
    let (inserted, _, _) = tokio::try_join!(
        rows(tx, INSERT_ATTEMPTS, &attempt_params),
        exec(tx, STEPS_RUNNING, &step_params),
        exec(tx, JOBS_RUNNING, &job_params),
    )?;
    let mut ids: HashMap<(Uuid, String), i64> = HashMap::with_capacity(inserted.len());
    for r in &inserted {
        ids.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
    }
    let mut out = Vec::with_capacity(claimed.len());
    for c in claimed {
        let number = c.attempts + 1;
        let Some(id) = ids.remove(&(c.job_id, c.step.clone())) else {
            return Err(corrupt(format!("no attempt was written for job {} step '{}'", c.job_id, c.step)));
        };
        out.push(hand_out(tx, c, id, number, worker, specs).await?);
    }
    Ok(out)
}

/// What the worker gets for one claimed attempt.
async fn hand_out(
    tx: &Tx<'_>,
    c: Candidate,
    id: i64,
    number: i32,
    worker: &ClaimingWorker,
    specs: &HashMap<Uuid, Arc<JobSpec>>,
) -> Result<ClaimedAttempt> {
    let job_id = JobId(c.job_id);
    let spec = match specs.get(&c.job_id) {
        Some(spec) => spec.clone(),
        // Dropped from the cache between the lock and here (a rare race): read it.
        None => crate::spec_cache::spec(tx, job_id).await?,
    };
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
            if let Some(r) = opt(tx, NEEDED_OUTPUTS, &[&c.job_id, n]).await? {
                let text: &str = r.try_get(0)?;
                needed.push((
                    n.as_str(),
                    serde_json::from_str::<std::collections::BTreeMap<String, String>>(text)?,
                ));
            }
        }
        env.extend(rota_domain::workflow::needed_outputs_env(needed.iter().map(|(n, o)| (*n, o))));
    }
    Ok(ClaimedAttempt {
        attempt_id: AttemptId(id),
        job_id,
        namespace: worker.namespace.clone(),
        step: c.step,
        number: u32_of(i64::from(number))?,
        run: step.run.clone(),
        env,
        secret_env,
        timeout: step.timeout,
        memory_limit: step.memory_limit,
        keep_workspace: step.keep_workspace,
        log_cap: step.log_cap.unwrap_or(DEFAULT_LOG_CAP),
        queue: c.queue,
    })
}
