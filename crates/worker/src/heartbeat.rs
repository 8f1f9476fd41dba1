//! Heartbeats on their own task, every `heartbeat_interval`: list the held attempts,
//! renew their leases (recording when the renewing request was SENT, for self-fencing),
//! and carry out the reply's stop orders. A 401 ends the session. A slow reply never
//! delays the next heartbeat (up to three may be in flight).

use crate::context::Ctx;
use rota_api_types::worker::HeartbeatRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MAX_IN_FLIGHT: usize = 3;

/// Sends heartbeats until `session` is cancelled.
pub(crate) async fn heartbeat_loop(ctx: Arc<Ctx>, session: CancellationToken) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = ctx.heartbeat_now.notified() => {}
            () = session.cancelled() => return,
        }
        next = Instant::now() + ctx.lease().heartbeat_interval;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            tracing::warn!("heartbeats are not being answered; skipping one");
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (ctx, in_flight, failing, session) =
            (ctx.clone(), in_flight.clone(), failing.clone(), session.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = beat(&ctx, &failing) => {}
                () = session.cancelled() => {}
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One heartbeat.
async fn beat(ctx: &Ctx, failing: &AtomicBool) {
    let generation = ctx.client.credential_generation();
    let req = HeartbeatRequest {
        attempts: ctx.attempts.ids(),
        draining: ctx.is_draining(),
        concurrency: Some(ctx.fleet.active()),
    };
    let sent = Instant::now();
    // Past the lease TTL an answer is useless: the leases are gone either way.
    let limit = ctx.lease().lease_ttl;
    match tokio::time::timeout(limit, ctx.client.heartbeat(&req)).await {
        Ok(Ok(resp)) => {
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!("heartbeats are answered again");
            }
            ctx.attempts.renew(&resp.renewed, sent);
            ctx.set_lease(0, resp.lease_ttl_ms);
            for order in &resp.stop {
                ctx.apply_stop(order);
            }
        }
        Ok(Err(e)) if e.is_unauthorized() => ctx.session_lost(generation, &e),
        Ok(Err(e)) => {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(attempts = req.attempts.len(), "heartbeat failed: {e}");
            }
        }
        Err(_) => {
            if !failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(attempts = req.attempts.len(), "heartbeat not answered within the lease TTL");
            }
        }
    }
}
