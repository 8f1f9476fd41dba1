//! Delivering results with their final log chunks, batched (`POST /worker/jobs/complete`)
//! when several are ready; kept and retried with backoff while the server is away; a 409
//! is logged and never retried. Results that carry their step's slot (`handover.rs`) ask
//! the server, in the same request, to claim for those slots (`claim`), and the steps it
//! returns start in them (`runner::start_claimed`); a slot nothing is claimed for, or
//! whose request failed, is freed for the claim loop. A result is retried without a claim.
//! It runs no steps; it only makes sure a refused attempt's group is dead.

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::handover::HandedSlot;
use rota_api_types::worker::{
    CompleteBatchRequest, CompleteItem, CompleteRequest, LogBatch, LogsBatchRequest,
};
use rota_client::ClientError;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Results per request at most.
const BATCH_MAX: usize = 64;
/// While other steps still run, a result waits this long for company before it is sent:
/// each request costs the server a transaction and a commit, so one request per few
/// results instead of one per result is most of what the server spends on a busy worker.
/// A result with no step left running goes at once.
const LINGER: Duration = Duration::from_millis(2);
/// Final log bytes carried inside one completion request at most; an attempt with more
/// ships them through the logs endpoint first.
const CARRIED_LOGS_MAX: usize = 4 << 20;

/// A result to deliver, with the slot its step held if its completion may claim for it.
#[derive(Debug)]
struct Queued {
    item: CompleteItem,
    slot: Option<HandedSlot>,
}

/// The queue of results to deliver.
#[derive(Debug, Default)]
pub(crate) struct Reporter {
    queue: Mutex<VecDeque<Queued>>,
    /// Results taken from the queue by a request still in flight.
    in_flight: AtomicUsize,
    wake: Notify,
    /// Woken each time a request settled, for a claim loop waiting for results to drain.
    settled: Notify,
}

/// Counts taken results as in flight until the request settled (and any retry was
/// queued again), so `pending` never reads 0 while a result is on the wire.
struct InFlight<'a>(&'a Reporter, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(self.1, Ordering::SeqCst);
        self.0.settled.notify_waiters();
    }
}

fn log_bytes(item: &CompleteItem) -> usize {
    item.logs.iter().map(|c| c.data.0.len()).sum()
}

/// What became of one result.
enum Delivery {
    Done,
    Retry,
}

impl Reporter {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a result, with its step's slot if its completion may claim for it.
    pub(crate) fn push(&self, slot: Option<HandedSlot>, item: CompleteItem) {
        self.lock().push_back(Queued { item, slot });
        self.wake.notify_one();
    }

    /// Results not delivered yet (queued or on the wire).
    pub(crate) fn pending(&self) -> usize {
        let queued = self.lock().len();
        queued + self.in_flight.load(Ordering::SeqCst)
    }

    /// Results this worker may leave undelivered and still claim more work: a full request's
    /// worth, or two rounds of its slots. Past it the server is recording results slower
    /// than it hands out steps, and claiming on would only pile up finished work that a
    /// crash of this worker loses and the server's leases must keep alive (a PostgreSQL
    /// soak once grew to 6 900 "running" attempts on a worker of 8 slots).
    pub(crate) fn undelivered_bound(concurrency: u32) -> usize {
        BATCH_MAX.max(2 * concurrency as usize)
    }

    /// Returns once a request settled, or after `at_most`.
    pub(crate) async fn settled_or(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.settled.notified()).await;
    }

    /// Takes the next request's worth: up to [`BATCH_MAX`] results carrying at most
    /// [`CARRIED_LOGS_MAX`] log bytes (always at least one).
    fn take(&self) -> Vec<Queued> {
        let mut q = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(front) = q.front() {
            let b = log_bytes(&front.item);
            if !out.is_empty() && (out.len() >= BATCH_MAX || bytes + b > CARRIED_LOGS_MAX) {
                break;
            }
            bytes += b;
            out.extend(q.pop_front());
        }
        self.in_flight.fetch_add(out.len(), Ordering::SeqCst);
        out
    }

    /// Queues results again, in front; a retried result claims nothing (its slot, if it
    /// still had one, is freed).
    fn requeue(&self, items: Vec<CompleteItem>) {
        let mut q = self.lock();
        for item in items.into_iter().rev() {
            q.push_front(Queued { item, slot: None });
        }
    }

    /// The delivery loop; returns when `stop` is cancelled.
    pub(crate) async fn run(&self, ctx: &Arc<Ctx>, stop: CancellationToken) {
        let mut backoff = Backoff::server();
        loop {
            if self.pending() == 0 {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
            let until = Instant::now() + LINGER;
            while self.lingers(ctx) {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep_until(until) => break,
                    () = stop.cancelled() => return,
                }
            }
            if self.deliver_some(ctx).await {
                if backoff.is_failing() {
                    tracing::info!("results are being delivered again");
                }
                backoff.reset();
            } else {
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }

    /// Whether the next request waits for more results: while other steps still run and
    /// the batch is not full; and when results carry slots to claim for, only until they
    /// are as many as the claim loop waits for (`runner::claim_batch`): a slot is not
    /// left idle longer than it would have been without its result's claim.
    fn lingers(&self, ctx: &Ctx) -> bool {
        if ctx.attempts.running_count() == 0 {
            return false;
        }
        let q = self.lock();
        let slots = q.iter().filter(|r| r.slot.is_some()).count();
        q.len() < BATCH_MAX && (slots == 0 || slots < crate::runner::claim_batch(ctx))
    }

    /// Delivers until the queue is empty or `deadline` passes.
    pub(crate) async fn flush(&self, ctx: &Arc<Ctx>, deadline: Instant) {
        let mut backoff = Backoff::server();
        while self.pending() > 0 && Instant::now() < deadline {
            if self.lock().is_empty() {
                // Everything left is on the wire from the background loop.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if !self.deliver_some(ctx).await {
                let nap = backoff.next_delay();
                tokio::time::sleep_until((Instant::now() + nap).min(deadline)).await;
            }
        }
    }

    /// Sends one request's worth. False when something must be retried later.
    async fn deliver_some(&self, ctx: &Arc<Ctx>) -> bool {
        let taken = self.take();
        let _in_flight = InFlight(self, taken.len());
        if taken.is_empty() {
            return true;
        }
        let (mut items, mut slots): (Vec<CompleteItem>, Vec<HandedSlot>) =
            (Vec::with_capacity(taken.len()), Vec::new());
        for q in taken {
            items.push(q.item);
            slots.extend(q.slot);
        }
        // Oversized final output goes through the logs endpoint first; the slots are not
        // kept waiting for that.
        if items.iter().any(|i| log_bytes(i) > CARRIED_LOGS_MAX) {
            slots.clear();
        }
        for item in items.iter_mut().filter(|i| log_bytes(i) > CARRIED_LOGS_MAX) {
            if ship_logs_first(ctx, item).await.is_err() {
                self.requeue(items);
                return false;
            }
        }
        // As many slots as the claim loop would fill now are claimed for; the rest are
        // freed before the request goes, as they would have been without it.
        let claim = match u32::try_from(slots.len()) {
            Ok(n) if n > 0 && ctx.claims_with_results() => ctx.fleet.refillable(n),
            _ => 0,
        };
        slots.truncate(claim as usize);
        let generation = ctx.client.credential_generation();
        let sent = Instant::now();
        let mut claimed = Vec::new();
        let outcome = if items.len() == 1 && claim == 0 {
            let item = &items[0];
            let req = CompleteRequest {
                attempt_id: item.attempt_id,
                outcome: item.outcome.clone(),
                logs: item.logs.clone(),
                dropped_bytes: item.dropped_bytes,
                run_ms: item.run_ms,
                outputs: item.outputs.clone(),
            };
            ctx.client.complete(item.job_id, &item.step, &req).await.map(|_| vec![(200, None)])
        } else {
            let req = CompleteBatchRequest { results: items.clone(), claim };
            ctx.client.complete_batch(&req).await.map(|resp| {
                claimed = resp.claimed;
                resp.results.into_iter().map(|r| (r.status, r.error)).collect::<Vec<_>>()
            })
        };
        // The claimed steps start in the slots their results freed; slots left over are
        // freed (dropped) for the claim loop.
        if !claimed.is_empty() {
            let mut slots = slots.drain(..);
            crate::runner::start_claimed(ctx, &ctx.executors, claimed, claim, sent, || {
                slots.next().and_then(HandedSlot::into_slot)
            });
        }
        drop(slots);
        match outcome {
            Ok(statuses) => {
                let mut retry = Vec::new();
                let mut statuses = statuses.into_iter();
                for item in items {
                    let (status, error) =
                        statuses.next().unwrap_or((503, Some("no result for this entry".into())));
                    match settle(ctx, &item, status, error.as_deref()) {
                        Delivery::Done => ctx.attempts.remove(item.attempt_id),
                        Delivery::Retry => retry.push(item),
                    }
                }
                let ok = retry.is_empty();
                self.requeue(retry);
                ok
            }
            Err(ClientError::Http { status, message, .. }) if items.len() == 1 && status != 401 => {
                let item = items.remove(0);
                match settle(ctx, &item, status, Some(&message)) {
                    Delivery::Done => {
                        ctx.attempts.remove(item.attempt_id);
                        true
                    }
                    Delivery::Retry => {
                        self.requeue(vec![item]);
                        false
                    }
                }
            }
            Err(e) => {
                if e.is_unauthorized() {
                    ctx.session_lost(generation, &e);
                } else if e.is_transient() || matches!(e, ClientError::NotRegistered) {
                    tracing::debug!(results = items.len(), "results not delivered yet: {e}");
                } else {
                    tracing::warn!(results = items.len(), "result delivery failed: {e}; retrying");
                }
                self.requeue(items);
                false
            }
        }
    }
}

/// Decides what a per-result status means.
fn settle(ctx: &Ctx, item: &CompleteItem, status: u16, error: Option<&str>) -> Delivery {
    match status {
        200..=299 => {
            tracing::debug!(attempt_id = %item.attempt_id, job_id = %item.job_id, step = %item.step,
                outcome = %item.outcome.reason(), "result recorded");
            Delivery::Done
        }
        409 => {
            tracing::warn!("attempt {} superseded: result not recorded (409)", item.attempt_id);
            let _ = ctx.spawner.release(item.attempt_id);
            Delivery::Done
        }
        401 | 408 | 429 | 500..=599 => Delivery::Retry,
        _ => {
            tracing::error!(attempt_id = %item.attempt_id, status,
                "server refused the result: {}; it is dropped", error.unwrap_or("no reason given"));
            let _ = ctx.spawner.release(item.attempt_id);
            Delivery::Done
        }
    }
}

/// Sends an item's final chunks via `POST /worker/logs` in bounded requests, removing
/// what was stored. A 409/4xx for them clears them too (the completion will tell).
async fn ship_logs_first(ctx: &Ctx, item: &mut CompleteItem) -> Result<(), ClientError> {
    while !item.logs.is_empty() {
        let n = crate::logship::chunks_per_request(&item.logs);
        let chunks: Vec<_> = item.logs[..n].to_vec();
        let batch = LogBatch {
            job_id: item.job_id,
            step: item.step.clone(),
            attempt_id: item.attempt_id,
            chunks,
            dropped_bytes: item.dropped_bytes,
        };
        let generation = ctx.client.credential_generation();
        match ctx.client.logs_batch(&LogsBatchRequest { batches: vec![batch] }).await {
            Ok(resp) => {
                let status = resp.results.first().map_or(503, |r| r.status);
                if (500..=599).contains(&status) {
                    return Err(ClientError::Http {
                        status,
                        code: "retry".into(),
                        message: "log append failed".into(),
                        pointer: None,
                    });
                }
                item.logs.drain(..n);
            }
            Err(e) => {
                if e.is_unauthorized() {
                    ctx.session_lost(generation, &e);
                }
                if e.is_transient() || e.is_unauthorized() || matches!(e, ClientError::NotRegistered) {
                    return Err(e);
                }
                item.logs.drain(..n);
            }
        }
    }
    Ok(())
}
