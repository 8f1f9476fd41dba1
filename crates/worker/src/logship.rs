//! Step output on its way to the server: one shipper per worker coalesces every attempt's
//! chunks into `POST /worker/logs` at least every `log_flush` (sooner at 1 MiB), puts them
//! back while the server is away, stops an attempt's output on 409, and hands out final
//! chunks only after requests in flight settled. Large final output is shipped here too,
//! as binary frames, rather than as base64 inside the completion. While the server takes
//! output, a step that writes faster than it is stored is held back (its pipes are not
//! read while [`HOLD_AT`] of its output is unsent), so it waits in `write(2)` instead of
//! burning CPU the other steps and the server need; while the server is away nothing is
//! held back (the buffer keeps the tail up to the step's cap, as before). Buffering itself
//! is `logbuf.rs`.

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::logbuf::{FinalLogs, LogBuffers};
use rota_api_types::worker::{LogBatch, LogsBatchRequest, Stream};
use rota_client::WorkerClient;
use rota_domain::{AttemptId, JobId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Buffered bytes that trigger a send before the flush interval.
const WAKE_AT: usize = 1 << 20;
/// Raw bytes per `POST /worker/logs` at most (base64 makes it 4/3 on the wire).
pub(crate) const REQUEST_MAX: usize = 8 << 20;
/// A log request that takes longer is abandoned (and its chunks retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Final output of at least this many bytes is sent through the logs route (binary frames:
/// raw bytes) before the completion, instead of inside it (JSON: base64, which costs the
/// worker and the server more than the extra round trip from here on).
const SHIP_FINAL_AT: usize = 64 << 10;
/// Unsent bytes of one attempt at which its pipes are no longer read until the shipper
/// took them (or half its log cap, if less). One full request: the shipper sends requests
/// as large as before, and reading resumes while one is in flight.
pub(crate) const HOLD_AT: usize = REQUEST_MAX;

/// The per-worker log buffer and shipper.
#[derive(Debug)]
pub(crate) struct LogShip {
    buffers: Mutex<LogBuffers>,
    wake: Notify,
    /// Held while a request is in flight, so an attempt's final chunks are taken only
    /// after its earlier chunks were stored or put back.
    send_lock: tokio::sync::Mutex<()>,
    flush_every: Duration,
    /// The protocol client, once the shipper runs (final chunks are shipped with it).
    client: OnceLock<WorkerClient>,
    /// Notified whenever buffered output was taken or dropped, or `taking` changed.
    room: Notify,
    /// True while the shipper runs and its last request was stored: only then is a step's
    /// output held back. A server that is away (or a shipper that is not running) must not
    /// stall steps: their output is read and kept up to the cap as before.
    taking: AtomicBool,
}

impl LogShip {
    /// A shipper that sends at least every `flush_every`.
    pub(crate) fn new(flush_every: Duration) -> Self {
        Self {
            buffers: Mutex::default(),
            wake: Notify::new(),
            send_lock: tokio::sync::Mutex::new(()),
            flush_every,
            client: OnceLock::new(),
            room: Notify::new(),
            taking: AtomicBool::new(false),
        }
    }

    /// Whether the shipper is taking output; wakes held-back readers when that changes.
    pub(crate) fn set_taking(&self, taking: bool) {
        if self.taking.swap(taking, Ordering::Relaxed) != taking {
            self.room.notify_waiters();
        }
    }

    /// Returns once the attempt may buffer more output: at once unless it holds
    /// [`HOLD_AT`] unsent bytes while the server takes output; then after the shipper took
    /// them (it is woken for that), or the server stopped answering. Cancel-safe.
    pub(crate) async fn room_for(&self, id: AttemptId) {
        loop {
            let freed = self.room.notified();
            tokio::pin!(freed);
            // Registered before the check, so a take between the check and the wait is seen.
            freed.as_mut().enable();
            if !self.taking.load(Ordering::Relaxed) || !self.lock().is_full(id, HOLD_AT) {
                return;
            }
            self.wake.notify_one();
            freed.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogBuffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts buffering for an attempt, keeping at most `cap` unsent bytes.
    pub(crate) fn open(&self, id: AttemptId, job_id: JobId, step: &str, cap: u64) {
        self.lock().open(id, job_id, step, cap);
    }

    /// Buffers output of an attempt (ignored once it was finished or refused).
    pub(crate) fn push(&self, id: AttemptId, stream: Stream, data: &[u8]) {
        let total = {
            let mut b = self.lock();
            b.push(id, stream, data);
            b.total()
        };
        if total >= WAKE_AT {
            self.wake.notify_one();
        }
    }

    /// Unsent bytes across attempts.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().total()
    }

    /// Ends an attempt's buffering and returns what was never shipped, after any request
    /// in flight has settled.
    pub(crate) async fn finish(&self, id: AttemptId) -> FinalLogs {
        let _sending = self.send_lock.lock().await;
        let mut fin = self.lock().take_final(id);
        let bytes: usize = fin.chunks.iter().map(|c| c.data.0.len()).sum();
        if bytes >= SHIP_FINAL_AT
            && !fin.rejected
            && let (Some(client), Some((job_id, step))) = (self.client.get(), fin.owner.clone())
        {
            ship_final(client, id, job_id, &step, &mut fin).await;
        }
        fin
    }

    /// What a shipper's request takes (tests stand in for a server with it).
    #[cfg(test)]
    pub(crate) fn take_for_test(&self, max_bytes: usize) -> (Vec<LogBatch>, usize) {
        let mut b = self.lock();
        let before = b.total();
        let batches = b.take_batch(max_bytes);
        drop(b);
        self.room.notify_waiters();
        (batches, before)
    }

    /// Forgets an attempt's output (its session is gone).
    pub(crate) fn discard(&self, id: AttemptId) {
        self.lock().discard(id);
    }

    /// Sends everything buffered now. Err = the server could not take it (retry later).
    async fn ship_once(&self, ctx: &Ctx) -> Result<(), ()> {
        let _sending = self.send_lock.lock().await;
        loop {
            let batches = self.lock().take_batch(REQUEST_MAX);
            if batches.is_empty() {
                return Ok(());
            }
            // Held-back readers go on while this request is in flight.
            self.room.notify_waiters();
            let generation = ctx.client.credential_generation();
            let req = LogsBatchRequest { batches };
            let res = tokio::time::timeout(SEND_TIMEOUT, ctx.client.logs_batch(&req)).await;
            let batches = req.batches;
            match res {
                Ok(Ok(resp)) => {
                    let mut results = resp.results.into_iter();
                    let mut retry = Vec::new();
                    for batch in batches {
                        match results.next().map(|r| (r.status, r.error)) {
                            Some((200..=299, _)) => {}
                            Some((409, _)) => {
                                tracing::info!(attempt_id = %batch.attempt_id,
                                    "server refused logs (409): attempt superseded, no more output is sent for it");
                                self.lock().reject(batch.attempt_id);
                                self.room.notify_waiters();
                            }
                            Some((status @ 400..=499, error)) if status != 408 && status != 429 => {
                                tracing::warn!(attempt_id = %batch.attempt_id, status,
                                    "server refused logs: {}; no more output is sent for it", error.unwrap_or_default());
                                self.lock().reject(batch.attempt_id);
                                self.room.notify_waiters();
                            }
                            _ => retry.push(batch),
                        }
                    }
                    if !retry.is_empty() {
                        self.lock().put_back(retry);
                        return Err(());
                    }
                }
                Ok(Err(e)) if e.is_unauthorized() => {
                    self.lock().put_back(batches);
                    ctx.session_lost(generation, &e);
                    return Err(());
                }
                Ok(Err(e)) if e.is_transient() || matches!(e, rota_client::ClientError::NotRegistered) => {
                    tracing::debug!("log shipping failed: {e}");
                    self.lock().put_back(batches);
                    return Err(());
                }
                Ok(Err(e)) => {
                    let n: usize = batches.iter().map(|b| b.chunks.len()).sum();
                    tracing::warn!("server refused a log batch ({e}): {n} chunks dropped");
                }
                Err(_) => {
                    tracing::debug!("log shipping timed out");
                    self.lock().put_back(batches);
                    return Err(());
                }
            }
        }
    }

    /// The shipper: sends at least every `flush_every`, sooner when 1 MiB is buffered,
    /// backing off while the server is away. Returns when `stop` is cancelled.
    pub(crate) async fn run(&self, ctx: &Ctx, stop: CancellationToken) {
        let _ = self.client.set(ctx.client.clone());
        let mut backoff = Backoff::new(self.flush_every, Duration::from_secs(5));
        let mut delay = self.flush_every;
        loop {
            let failing = backoff.is_failing();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.wake.notified(), if !failing => {}
                () = stop.cancelled() => {
                    self.set_taking(false);
                    return;
                }
            }
            if self.ship_once(ctx).await.is_ok() {
                self.set_taking(true);
                backoff.reset();
                delay = self.flush_every;
            } else {
                self.set_taking(false);
                delay = backoff.next_delay();
            }
        }
    }

    /// Ships what is buffered, retrying until empty or `deadline`.
    pub(crate) async fn flush(&self, ctx: &Ctx, deadline: Instant) {
        while Instant::now() < deadline {
            if self.ship_once(ctx).await.is_ok() && self.buffered() == 0 {
                return;
            }
            tokio::time::sleep_until((Instant::now() + Duration::from_millis(200)).min(deadline)).await;
        }
    }
}

/// How many of `chunks`, from the first, go into one request of at most `REQUEST_MAX`
/// bytes of output; at least one, so a single chunk over the bound still goes alone.
pub(crate) fn chunks_per_request(chunks: &[rota_api_types::worker::LogChunk]) -> usize {
    let mut bytes = 0;
    chunks
        .iter()
        .take_while(|c| {
            bytes += c.data.0.len();
            bytes <= REQUEST_MAX
        })
        .count()
        .max(1)
}

/// Sends an ended attempt's final chunks in bounded requests, removing from `fin` what was
/// stored. Anything not stored (the server away, a refusal) stays in `fin`: the completion
/// carries it, and says what became of the attempt.
async fn ship_final(client: &WorkerClient, id: AttemptId, job_id: JobId, step: &str, fin: &mut FinalLogs) {
    while !fin.chunks.is_empty() {
        let n = chunks_per_request(&fin.chunks);
        let batch = LogBatch {
            job_id,
            step: step.to_string(),
            attempt_id: id,
            chunks: fin.chunks.drain(..n).collect(),
            dropped_bytes: fin.dropped,
        };
        let mut req = LogsBatchRequest { batches: vec![batch] };
        match tokio::time::timeout(SEND_TIMEOUT, client.logs_batch(&req)).await {
            Ok(Ok(resp)) if resp.results.first().is_some_and(|r| (200..=299).contains(&r.status)) => {}
            _ => {
                tracing::debug!(attempt_id = %id, "final log chunks not shipped on their own: the completion carries them");
                if let Some(b) = req.batches.pop() {
                    fin.chunks.splice(0..0, b.chunks);
                }
                return;
            }
        }
    }
}
