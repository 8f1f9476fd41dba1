//! The sweeper: expires leases (applying each step's `on_lost`), fails jobs past their
//! deadline (telling workers to stop their steps), and prunes finished jobs past the
//! retention. It changes state only through the store.

use crate::metrics::Metrics;
use crate::state::AppState;
use rota_api_types::worker::{Command, StopOrder, StopReason};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Pruning runs every tenth of the retention, between these bounds: hourly alone let a short
/// retention (the soak bench uses one minute) grow the database for up to an hour.
const PRUNE_EVERY_MAX: Duration = Duration::from_secs(3600);
const PRUNE_EVERY_MIN: Duration = Duration::from_secs(5);
const REVOKE_PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    // Sweep often enough that a lease is declared lost well within one heartbeat of its
    // expiry, but never busier than every 100 ms.
    let tick =
        (state.config.heartbeat_interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let prune_every = (state.config.retention / 10).clamp(PRUNE_EVERY_MIN, PRUNE_EVERY_MAX);
    let mut last_prune: Option<Instant> = None;
    let mut last_revoke_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        sweep_once(&state).await;
        if last_revoke_prune.is_none_or(|t: Instant| t.elapsed() >= REVOKE_PRUNE_EVERY) {
            last_revoke_prune = Some(Instant::now());
            match state.store.prune_revokes(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned expired revokes"),
                Err(e) => tracing::warn!(error = %e, "pruning expired revokes failed"),
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(Instant::now());
            let retention =
                chrono::Duration::from_std(state.config.retention).unwrap_or(chrono::Duration::MAX);
            let before = chrono::Utc::now()
                .checked_sub_signed(retention)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            match state.store.prune_finished(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned finished jobs past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
            }
        }
    }
}

pub(crate) async fn sweep_once(state: &AppState) {
    let now = chrono::Utc::now();
    match state.store.expire_leases(now).await {
        Ok(lost) if !lost.is_empty() => {
            Metrics::add(&state.metrics.attempts_lost, lost.len() as u64);
            for l in &lost {
                tracing::warn!(job_id = %l.job_id, step = %l.step, attempt_id = %l.attempt_id, retried = l.retried,
                    "attempt lost: lease expired");
            }
            state.wake_claimers();
            state.bump_progress();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiring leases failed"),
    }
    match state.store.expire_deadlines(now).await {
        Ok(running) => {
            for r in &running {
                tracing::info!(job_id = %r.job_id, step = %r.step, attempt_id = %r.attempt_id, "deadline passed: stopping attempt");
                state.hub.push(
                    r.session,
                    Command::Stop(StopOrder {
                        attempt_id: r.attempt_id,
                        reason: StopReason::Deadline,
                        signal: None,
                    }),
                );
            }
            if !running.is_empty() {
                state.bump_progress();
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring deadlines failed"),
    }
}
