//! The claim loop and its slots: it claims only for free slots (`max = concurrency -
//! running`), waits for a slot when none is free (no claim call), long-polls, and starts
//! an executor per claimed attempt. It stops claiming at once on shutdown or when the
//! session ends (the in-flight long-poll is dropped). It never runs steps itself.
//! [`start_claimed`] starts claimed steps in their slots, for the claim loop and for the
//! steps a completion claimed for the slots it freed (`report.rs`).

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::executor;
use crate::report::Reporter;
use rota_api_types::worker::{ClaimRequest, ClaimedStep};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// While other steps still run, a freed slot waits this long for more slots to free up
/// (up to half the concurrency), so one claim (one server transaction) fills several. An
/// idle worker, and a long-poll in progress, are not delayed.
const CLAIM_LINGER: Duration = Duration::from_millis(2);

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
    loop {
        let mut permits = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
            () = session.cancelled() => return,
        };
        if ctx.attempts.running_count() > 0 {
            let want = claim_batch(ctx);
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
        // Results the server has not recorded yet hold claims back (bounded work in flight):
        // the slots stay held meanwhile, so the claim goes out as soon as they drain.
        while ctx.reporter.pending() >= Reporter::undelivered_bound(ctx.fleet.active()) {
            tokio::select! {
                () = ctx.reporter.settled_or(Duration::from_millis(100)) => {}
                () = shutdown.cancelled() => return,
                () = session.cancelled() => return,
            }
        }
        // The concurrency in force (autoscaling) and the --max-jobs budget decide how many
        // of the free slots may be filled; with none, wait for a change instead of claiming.
        let allowed = ctx.fleet.claimable();
        if allowed == 0 {
            drop(permits);
            let changed = ctx.fleet.changed.notified();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = shutdown.cancelled() => return,
                () = session.cancelled() => return,
            }
            continue;
        }
        let held = permits.num_permits();
        if held > allowed as usize {
            drop(permits.split(held - allowed as usize));
        }
        let free = slots.available_permits().min((allowed as usize).saturating_sub(permits.num_permits()));
        if free > 0
            && let Ok(more) = slots.clone().try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX))
        {
            permits.merge(more);
        }
        let max = u32::try_from(permits.num_permits()).unwrap_or(u32::MAX);
        let generation = ctx.client.credential_generation();
        let sent = Instant::now();
        let req = ClaimRequest { max, wait_ms };
        let claiming = Claiming::new(ctx, max);
        let mut held = ctx.fleet.held();
        let res = tokio::select! {
            r = ctx.client.claim(&req) => r,
            // Claims are held (worker configs being applied): the long-poll is dropped, so
            // nothing is handed to this worker meanwhile.
            _ = held.wait_for(|h| *h) => continue,
            () = shutdown.cancelled() => return,
            () = session.cancelled() => return,
        };
        match res {
            Ok(resp) => {
                if backoff.is_failing() {
                    tracing::info!("claims work again");
                }
                backoff.reset();
                start_claimed(ctx, executors, resp.attempts, max, sent, || permits.split(1));
            }
            Err(e) if e.is_unauthorized() => {
                ctx.session_lost(generation, &e);
                return;
            }
            Err(e) => {
                drop(claiming);
                if !backoff.is_failing() {
                    tracing::warn!("claim failed: {e}; retrying with backoff");
                } else {
                    tracing::debug!("claim failed: {e}");
                }
                drop(permits);
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                    () = session.cancelled() => return,
                }
            }
        }
    }
}

/// How many free slots a claim waits for (up to [`CLAIM_LINGER`]) while other steps run:
/// half the concurrency, at least one. The reporter waits the same way for results that
/// carry slots to claim for.
pub(crate) fn claim_batch(ctx: &Ctx) -> usize {
    (ctx.fleet.active() / 2).max(1) as usize
}

/// Counts the claim loop's request in flight for [`crate::fleet::FleetState::refillable`]
/// until it settled (dropped after what it got is counted in flight).
struct Claiming<'a>(&'a Ctx);

impl<'a> Claiming<'a> {
    fn new(ctx: &'a Ctx, max: u32) -> Self {
        ctx.fleet.set_claiming(max);
        Self(ctx)
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.fleet.set_claiming(0);
    }
}

/// Starts claimed `steps` (asked for `asked` slots, request sent at `sent`), each in the
/// slot `slot()` gives, and makes the autoscaling decision the claim allows.
pub(crate) fn start_claimed(
    ctx: &Arc<Ctx>,
    executors: &TaskTracker,
    steps: Vec<ClaimedStep>,
    asked: u32,
    sent: Instant,
    mut slot: impl FnMut() -> Option<OwnedSemaphorePermit>,
) {
    // The server started the leases while answering: just before the reply arrived, and
    // never before the request was sent.
    let lease_start = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or(sent).max(sent);
    let filled = steps.len() as u32 >= asked;
    for step in steps {
        // Counted in flight before its slot is taken (a handed-over slot stops counting
        // as busy then).
        ctx.fleet.claimed(&step, step.queue.clone());
        let slot = slot();
        if slot.is_none() {
            tracing::warn!(attempt_id = %step.attempt_id, "server handed out more steps than free slots");
        }
        let stop_rx = ctx.attempts.insert(step.attempt_id, lease_start, step.memory_limit);
        executors.spawn(executor::execute(ctx.clone(), step, stop_rx, slot));
    }
    ctx.fleet.autoscale(filled);
}
