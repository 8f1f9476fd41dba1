//! The sweeper: expires leases (applying each step's `on_lost`), fails jobs past their
//! deadline (telling workers to stop their steps), and prunes finished jobs and recorded
//! schedule fires (each schedule's newest kept) past the retention. It changes state only
//! through the store, reads time from the store's clock, and acts only while this server
//! leads (`rota_store::leader`): each of its writes is a conditional update (only a running
//! attempt past its lease is lost, only a live job past its deadline fails), so two servers
//! that briefly both lead never apply one twice.

use crate::metrics::LostBy;
use crate::state::AppState;
use rota_api_types::worker::{Command, StopOrder, StopReason};
use rota_domain::AttemptStatus;
use rota_store::bus::Event;
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
    let mut leading = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let leads = match state.leader.lead().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether this server leads; sweeping waits");
                false
            }
        };
        if leads != leading {
            leading = leads;
            if leads {
                tracing::info!(server = %state.me.id, "this server leads: it sweeps leases, deadlines and retention");
            } else {
                tracing::info!(server = %state.me.id, "this server no longer leads: it stops sweeping");
            }
        }
        if !leads {
            continue;
        }
        sweep_once(&state).await;
        if last_revoke_prune.is_none_or(|t: Instant| t.elapsed() >= REVOKE_PRUNE_EVERY) {
            last_revoke_prune = Some(Instant::now());
            match state.store.prune_revokes(state.store.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned expired revokes"),
                Err(e) => tracing::warn!(error = %e, "pruning expired revokes failed"),
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(Instant::now());
            let retention =
                chrono::Duration::from_std(state.config.retention).unwrap_or(chrono::Duration::MAX);
            let before = state
                .store
                .now()
                .checked_sub_signed(retention)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            match state.store.prune_finished(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned finished jobs past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
            }
            match state.store.prune_fires(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned schedule fires past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning schedule fires failed"),
            }
        }
    }
}

pub(crate) async fn sweep_once(state: &AppState) {
    let now = state.store.now();
    match state.store.expire_leases(now).await {
        Ok(lost) if !lost.is_empty() => {
            state.metrics.attempts_lost(LostBy::LeaseExpired, lost.len());
            let mut events = vec![Event::Claimable];
            for l in &lost {
                tracing::warn!(job_id = %l.job_id, step = %l.step, attempt_id = %l.attempt_id, retried = l.retried,
                    "attempt lost: lease expired");
                events.push(Event::Attempt {
                    job: l.job_id,
                    step: l.step.clone(),
                    attempt: l.attempt_id,
                    status: AttemptStatus::Lost,
                    // The feed fills these in from the attempt's claim when it saw it.
                    namespace: None,
                    worker: None,
                });
            }
            state.publish(events);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "expiring leases failed"),
    }
    match state.store.expire_deadlines(now).await {
        Ok(running) => {
            let mut stops = Vec::with_capacity(running.len());
            for r in &running {
                tracing::info!(job_id = %r.job_id, step = %r.step, attempt_id = %r.attempt_id, "deadline passed: stopping attempt");
                stops.push((
                    r.session,
                    Command::Stop(StopOrder {
                        attempt_id: r.attempt_id,
                        reason: StopReason::Deadline,
                        signal: None,
                    }),
                ));
            }
            if !running.is_empty() {
                state.hub.push_all(stops, state.config.lease_ttl);
                state.publish(
                    running
                        .iter()
                        .map(|r| Event::Job { job: r.job_id, state: None, namespace: None })
                        .collect(),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring deadlines failed"),
    }
}
