//! Group commit of submits (`JobStore::submit_jobs`): calls that arrive while a submit
//! transaction is in flight queue here, and the next transaction stores them all, committed
//! durably (the server's `synchronous_commit`) before any of them is answered. Without
//! it every submit was a transaction of its own: BEGIN, a savepoint, the rows, RELEASE,
//! and a COMMIT waiting for its WAL flush, per job.
//!
//! Owns the queue, the grouping (at most `MAX_GROUP_JOBS` jobs, a call never split; a lone
//! submit goes at once, nothing waits for company), the group's transaction with its
//! retries, and the answers. A group is first sent as one pipeline with no savepoint
//! (`submit::submit_pipelined`); if a job fails, the group runs again with one savepoint
//! per job (`submit::submit_jobs`), so one bad job is answered alone and never fails the
//! others. A failure of the whole transaction (the connection, retries exhausted) answers
//! every call of the group with it. What a job is and how it is stored is `submit.rs`'s.

use crate::error::Result;
use crate::submit;
use crate::tx::{self, Durability, MAX_RETRIES};
use deadpool_postgres::Pool;
use rota_store::{NewJob, StoreError, Submitted};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// Jobs in one group transaction at most (a single larger call still goes whole): a
/// bigger group holds its locks, and keeps its callers waiting, for longer.
const MAX_GROUP_JOBS: usize = 256;

/// Group transactions in flight at once: while one waits for its commit's WAL flush the
/// next one runs its statements.
const LANES: usize = 2;

/// What a call gets: one result per job, or the group's failure.
type Answer = rota_store::Result<Vec<rota_store::Result<Submitted>>>;

/// A call waiting for its group.
struct Waiting {
    jobs: Vec<NewJob>,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Group transactions running (each in a task of its own, at most `LANES`).
    lanes: usize,
}

struct Shared {
    pool: Pool,
    queue: Mutex<Queue>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

/// The submit combiner of one [`crate::PgStore`].
pub(crate) struct SubmitGroups {
    shared: Arc<Shared>,
}

impl SubmitGroups {
    pub(crate) fn new(pool: Pool) -> Self {
        Self { shared: Arc::new(Shared { pool, queue: Mutex::new(Queue::default()) }) }
    }

    /// Stores `jobs` in the next group transaction; answers once it committed.
    pub(crate) async fn submit(&self, jobs: Vec<NewJob>) -> Answer {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.shared.queue();
            q.waiting.push_back(Waiting { jobs, reply });
            let free = q.lanes < LANES;
            if free {
                q.lanes += 1;
            }
            free
        };
        if start {
            // A task, not this call's future: a caller that goes away (its client hung up)
            // must not take the group's transaction, and the others' answers, with it.
            tokio::spawn(drain(self.shared.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable("the submit group ended without an answer".into()))
        })
    }
}

/// Runs groups until nothing waits.
async fn drain(shared: Arc<Shared>) {
    let mut lane = Lane { shared: shared.clone(), running: true };
    loop {
        let group = {
            let mut q = shared.queue();
            let mut group: Vec<Waiting> = Vec::new();
            let mut jobs = 0;
            while let Some(next) = q.waiting.front() {
                if !group.is_empty() && jobs + next.jobs.len() > MAX_GROUP_JOBS {
                    break;
                }
                jobs += next.jobs.len();
                group.extend(q.waiting.pop_front());
            }
            if group.is_empty() {
                // Under the lock: a call queued after this sees the lane free and starts one.
                q.lanes -= 1;
                lane.running = false;
                return;
            }
            group
        };
        run(&shared, group).await;
    }
}

/// A lane's task. Dropped while `running` only if the task panicked (or its runtime is
/// going away): frees the lane and, after a panic, starts another if calls wait, so they
/// are not left waiting for a submit that may never come.
struct Lane {
    shared: Arc<Shared>,
    running: bool,
}

impl Drop for Lane {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let runtime = tokio::runtime::Handle::try_current().ok().filter(|_| std::thread::panicking());
        let restart = {
            let mut q = self.shared.queue();
            q.lanes -= 1;
            let restart = runtime.is_some() && !q.waiting.is_empty();
            if restart {
                q.lanes += 1;
            }
            restart
        };
        if let Some(rt) = runtime.filter(|_| restart) {
            rt.spawn(drain(self.shared.clone()));
        }
    }
}

/// Stores one group and answers its calls.
async fn run(shared: &Shared, group: Vec<Waiting>) {
    let mut counts = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    let mut jobs = Vec::new();
    for w in group {
        counts.push(w.jobs.len());
        replies.push(w.reply);
        jobs.extend(w.jobs);
    }
    match store(shared, &jobs).await {
        Ok(results) => {
            let mut results = results.into_iter();
            for (reply, n) in replies.into_iter().zip(counts) {
                // A caller that went away no longer wants its answer; its jobs are stored.
                let _ = reply.send(Ok(results.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            tracing::debug!(calls = replies.len(), jobs = jobs.len(), error = ?e, "a submit group failed");
            let e = StoreError::from(e);
            for reply in replies {
                let _ = reply.send(Err(copy_of(&e)));
            }
        }
    }
}

/// How a group's transaction ended.
enum Pass {
    Committed(Vec<rota_store::Result<Submitted>>),
    /// The pipelined pass failed on a job: run the group again, one savepoint per job.
    OneByOne,
}

/// The group's transaction: pipelined first, one savepoint per job if that failed on a job;
/// run again from the start (as `in_tx!` does) when it loses a deadlock or a serialization
/// conflict.
async fn store(shared: &Shared, jobs: &[NewJob]) -> Result<Vec<rota_store::Result<Submitted>>> {
    let mut one_by_one = false;
    let mut tries = 0u32;
    loop {
        match pass(shared, jobs, one_by_one).await {
            Ok(Pass::Committed(out)) => return Ok(out),
            Ok(Pass::OneByOne) => one_by_one = true,
            Err(e) if e.is_retryable() && tries < MAX_RETRIES => {
                tries += 1;
                tracing::debug!(tries, error = ?e, "a submit group lost a conflict: running it again");
                tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn pass(shared: &Shared, jobs: &[NewJob], one_by_one: bool) -> Result<Pass> {
    let mut client = shared.client().await?;
    let mut tx = tx::begin(&mut client, Durability::Full).await?;
    let out = if one_by_one {
        submit::submit_jobs(&mut tx, jobs).await?
    } else {
        let pipelined = submit::submit_pipelined(&tx, jobs).await;
        match pipelined {
            Ok(out) => out,
            Err(e) if e.ends_the_batch() => return Err(e),
            Err(e) => {
                tracing::debug!(jobs = jobs.len(), error = ?e, "a job of a submit group failed: one savepoint per job");
                tx.rollback().await?;
                return Ok(Pass::OneByOne);
            }
        }
    };
    tx.commit().await?;
    Ok(Pass::Committed(out))
}

/// The group's failure for each of its calls (a `StoreError` is not `Clone`: a backend
/// failure is passed on as its text).
fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::Conflict(k, m) => StoreError::Conflict(*k, m.clone()),
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::StorageFull { path, detail } => {
            StoreError::StorageFull { path: path.clone(), detail: detail.clone() }
        }
        other => StoreError::Backend(Box::new(GroupFailed(other.to_string()))),
    }
}

/// A backend failure shared by the calls of a group.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GroupFailed(String);
