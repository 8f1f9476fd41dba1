//! The claim loop and its slots: it claims only for free slots (`max = concurrency -
//! running - slots already being claimed for`), waits for a slot when none is free (no
//! claim call), long-polls, and starts an executor per claimed attempt. A slot that frees
//! while another claim is on the wire gets its own claim at once (several long-polls may
//! be in flight, each for slots that were free when it was sent), so a step never waits
//! for another slot's round trip. It stops claiming at once on shutdown or when the
//! session ends (the in-flight long-polls are dropped). It never runs steps itself.

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::executor;
use rota_api_types::worker::{ClaimRequest, ClaimResponse};
use rota_client::ClientError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// While other steps still run, a freed slot waits this long for more slots to free up
/// (up to half the concurrency), so one claim (one server transaction) fills several. An
/// idle worker, and a long-poll in progress, are not delayed.
const CLAIM_LINGER: Duration = Duration::from_millis(2);

/// What a claim task brings back: the reply (`None`: dropped because claims were held),
/// the permits it was sent for, when it was sent, and the credential generation it used.
struct Claimed {
    res: Option<Result<ClaimResponse, ClientError>>,
    permits: OwnedSemaphorePermit,
    sent: Instant,
    generation: u64,
}

/// One claim long-poll for `permits.num_permits()` free slots.
async fn claim(ctx: Arc<Ctx>, permits: OwnedSemaphorePermit, wait_ms: u64) -> Claimed {
    let max = u32::try_from(permits.num_permits()).unwrap_or(u32::MAX);
    let generation = ctx.client.credential_generation();
    let sent = Instant::now();
    let req = ClaimRequest { max, wait_ms };
    let mut held = ctx.fleet.held();
    let res = tokio::select! {
        r = ctx.client.claim(&req) => Some(r),
        // Claims are held (worker configs being applied): the long-poll is dropped, so
        // nothing is handed to this worker meanwhile.
        _ = held.wait_for(|h| *h) => None,
    };
    Claimed { res, permits, sent, generation }
}

/// What the loop does after a claim came back.
enum Next {
    Go,
    /// Claims failed: send none before this instant.
    Pause(Instant),
    Stop,
}

/// Starts the executors of a claim's reply, or decides how to go on after a failure.
fn settle(ctx: &Arc<Ctx>, done: Claimed, backoff: &mut Backoff, executors: &TaskTracker) -> Next {
    let Claimed { res, mut permits, sent, generation } = done;
    let Some(res) = res else { return Next::Go };
    let max = permits.num_permits();
    match res {
        Ok(resp) => {
            if backoff.is_failing() {
                tracing::info!("claims work again");
            }
            backoff.reset();
            // The server started the leases while answering: just before the reply
            // arrived, and never before the request was sent.
            let lease_start = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or(sent).max(sent);
            let filled = resp.attempts.len() >= max;
            for step in resp.attempts {
                ctx.fleet.claimed(&step, step.queue.clone());
                let slot = permits.split(1);
                if slot.is_none() {
                    tracing::warn!(attempt_id = %step.attempt_id, "server handed out more steps than free slots");
                }
                let stop_rx = ctx.attempts.insert(step.attempt_id, lease_start, step.memory_limit);
                executors.spawn(executor::execute(ctx.clone(), step, stop_rx, slot));
            }
            ctx.fleet.autoscale(filled);
            Next::Go
        }
        Err(e) if e.is_unauthorized() => {
            ctx.session_lost(generation, &e);
            Next::Stop
        }
        Err(e) => {
            if !backoff.is_failing() {
                tracing::warn!("claim failed: {e}; retrying with backoff");
            } else {
                tracing::debug!("claim failed: {e}");
            }
            Next::Pause(Instant::now() + backoff.next_delay())
        }
    }
}

/// Claims and starts steps until `shutdown` or `session` is cancelled.
pub(crate) async fn claim_loop(
    ctx: &Arc<Ctx>,
    slots: &Arc<Semaphore>,
    executors: &TaskTracker,
    shutdown: &CancellationToken,
    session: &CancellationToken,
) {
    let mut backoff = Backoff::server();
    let wait_ms = u64::try_from(ctx.config.claim_wait.as_millis()).unwrap_or(u64::MAX);
    // Claims on the wire; dropping the set (on return) drops their long-polls.
    let mut claims: JoinSet<Claimed> = JoinSet::new();
    // Slots that claims on the wire were sent for (by task): not in flight yet, not free
    // either.
    let mut claiming = Claiming::default();
    let mut paused: Option<Instant> = None;
    loop {
        // After a failed claim nothing is sent until the backoff passed (replies of claims
        // still on the wire are taken meanwhile).
        if let Some(until) = paused {
            tokio::select! {
                () = tokio::time::sleep_until(until) => paused = None,
                Some(done) = claims.join_next_with_id() => {
                    if let Some(next) = finish(ctx, done, &mut claiming, &mut backoff, executors) {
                        match next {
                            Next::Go => {}
                            Next::Pause(t) => paused = Some(t),
                            Next::Stop => return,
                        }
                    }
                    continue;
                }
                () = shutdown.cancelled() => return,
                () = session.cancelled() => return,
            }
            continue;
        }
        let mut permits = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            Some(done) = claims.join_next_with_id() => {
                match finish(ctx, done, &mut claiming, &mut backoff, executors) {
                    Some(Next::Pause(t)) => paused = Some(t),
                    Some(Next::Stop) => return,
                    Some(Next::Go) | None => {}
                }
                continue;
            }
            () = shutdown.cancelled() => return,
            () = session.cancelled() => return,
        };
        if ctx.attempts.running_count() > 0 {
            let want = (ctx.fleet.active() / 2).max(1) as usize;
            let until = Instant::now() + CLAIM_LINGER;
            while permits.num_permits() + slots.available_permits() < want {
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => permits.merge(p),
                        Err(_) => return,
                    },
                    () = tokio::time::sleep_until(until) => break,
                    () = shutdown.cancelled() => return,
                    () = session.cancelled() => return,
                }
            }
        }
        // The concurrency in force (autoscaling) and the --max-jobs budget decide how many
        // of the free slots may be filled (less what claims on the wire may still fill);
        // with none, wait for a change instead of claiming.
        // Registered before the check: a change between the check and the wait (a slot
        // left, the hold lifted) must wake the wait, not be missed until the 250 ms nap.
        let changed = ctx.fleet.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let allowed = (ctx.fleet.claimable() as usize).saturating_sub(claiming.total());
        if allowed == 0 {
            drop(permits);
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                Some(done) = claims.join_next_with_id() => {
                    match finish(ctx, done, &mut claiming, &mut backoff, executors) {
                        Some(Next::Pause(t)) => paused = Some(t),
                        Some(Next::Stop) => return,
                        Some(Next::Go) | None => {}
                    }
                }
                () = shutdown.cancelled() => return,
                () = session.cancelled() => return,
            }
            continue;
        }
        let held = permits.num_permits();
        if held > allowed {
            drop(permits.split(held - allowed));
        }
        let free = slots.available_permits().min(allowed.saturating_sub(permits.num_permits()));
        if free > 0
            && let Ok(more) = slots.clone().try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX))
        {
            permits.merge(more);
        }
        let n = permits.num_permits();
        let task = claims.spawn(claim(ctx.clone(), permits, wait_ms));
        claiming.0.insert(task.id(), n);
    }
}

/// The slots each claim task on the wire was sent for.
#[derive(Default)]
struct Claiming(HashMap<tokio::task::Id, usize>);

impl Claiming {
    fn total(&self) -> usize {
        self.0.values().sum()
    }
}

/// Takes a claim task's end: `None` if the task itself failed (its permits are gone with
/// it).
fn finish(
    ctx: &Arc<Ctx>,
    done: Result<(tokio::task::Id, Claimed), tokio::task::JoinError>,
    claiming: &mut Claiming,
    backoff: &mut Backoff,
    executors: &TaskTracker,
) -> Option<Next> {
    match done {
        Ok((id, c)) => {
            claiming.0.remove(&id);
            Some(settle(ctx, c, backoff, executors))
        }
        Err(e) => {
            claiming.0.remove(&e.id());
            tracing::warn!("claim task ended abnormally: {e}");
            None
        }
    }
}
