//! The worker's life: register → serve a session (heartbeat, control, claims) → on a lost
//! session kill every step and register again → on shutdown drain (`draining: true`;
//! warm: steps get `drain_timeout`, soft: TERM→grace→KILL now, hard: KILL now), flush,
//! unregister. It owns the ordering only; each part lives in its own module.

use crate::Ready;
use crate::attempts::StopKind;
use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::control::control_loop;
use crate::error::WorkerError;
use crate::heartbeat::heartbeat_loop;
use crate::shutdown::ShutdownHandle;
use crate::{runner, session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bound on flushing logs and results at shutdown.
const FLUSH_BOUND: Duration = Duration::from_secs(10);
/// Extra time executors get after the KILL (pipe draining, record removal).
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Serves sessions until `shutdown`; see the module docs.
pub(crate) async fn serve(
    ctx: &Arc<Ctx>,
    handle: &ShutdownHandle,
    mut ready: Option<oneshot::Sender<Ready>>,
) -> Result<(), WorkerError> {
    let shutdown = handle.warm();
    // Sized for the autoscale maximum; the claim loop fills only what the concurrency in
    // force allows (`FleetState::claimable`).
    let slots = ctx.fleet.slots();
    let executors = &ctx.executors;
    let mut churn = Backoff::server();
    // `--replace` applies once, to the first registration: re-registering after a lost
    // session never takes the name from anyone.
    let mut replace = ctx.config.replace;
    let mut registered_before = false;
    loop {
        let resp = match session::register(ctx, shutdown, replace).await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ok(()),
            // Our session was ended and a live worker of another instance holds the name
            // now (it took it with --replace, or registered while we were unreachable):
            // stop for good rather than take it back and start a tug of war.
            Err(WorkerError::NameHeld { message }) if registered_before => {
                return Err(WorkerError::NameHeld {
                    message: format!(
                        "worker name \"{}\" was taken over by another instance while this worker ran; \
                         not taking it back: {message}",
                        ctx.config.name
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        replace = false;
        registered_before = true;
        ctx.set_lease(resp.heartbeat_interval_ms, resp.lease_ttl_ms);
        ctx.set_server_minor(resp.protocol_minor);
        ctx.fleet.hold_revokes(&resp.revoked, |id| {
            resp.revoke_expires_in_ms.get(&id).map(|ms| std::time::Duration::from_millis(*ms))
        });
        let lease = ctx.lease();
        tracing::info!(session_id = %resp.session_id, name = %ctx.config.name, server = %ctx.client.base_url(),
            heartbeat_ms = lease.heartbeat_interval.as_millis() as u64, lease_ttl_ms = lease.lease_ttl.as_millis() as u64,
            superseded = ?resp.superseded, instance_id = ctx.instance_id.as_deref().unwrap_or("none"), "registered");
        if let Some(tx) = ready.take() {
            let _ = tx.send(Ready { session_id: resp.session_id, name: ctx.config.name.clone() });
        }
        // A declared pool is in force before the first claim (its tags need a registration
        // that carries them: nothing is held yet, so registering again costs nothing).
        let configs = crate::hostconfig::fetch(ctx).await;
        let projects = crate::hostconfig::project_tags_or_kept(ctx, configs.as_deref());
        if crate::pool::sync(ctx, true, &projects).await == crate::pool::Synced::Reregister {
            continue;
        }
        let started = Instant::now();
        let session = ctx.begin_session();
        let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone(), session.clone()));
        let control = tokio::spawn(control_loop(ctx.clone(), session.clone()));
        // Worker configs (files, setup) are in place before the first claim; heartbeats
        // keep the session alive while a setup runs.
        if let Some(c) = &configs {
            // A stop while a setup runs ends it (its process group is killed).
            tokio::select! {
                () = crate::hostconfig::converge(ctx, c) => {}
                () = shutdown.cancelled() => {}
            }
        }
        let pools = tokio::spawn(crate::pool::pool_loop(ctx.clone(), session.clone()));
        runner::claim_loop(ctx, &slots, executors, shutdown, &session).await;

        if shutdown.is_cancelled() {
            drain(ctx, executors, &session, handle).await;
            let lost = session.is_cancelled();
            session.cancel();
            let _ = heartbeat.await;
            let _ = control.await;
            // Not awaited to its end: it may be running a setup, which a stop ends.
            pools.abort();
            pools.abort();
            let _ = pools.await;
            if !lost {
                match tokio::time::timeout(Duration::from_secs(5), ctx.client.unregister()).await {
                    Ok(Ok(())) => tracing::info!("unregistered"),
                    Ok(Err(e)) => tracing::warn!("unregister failed: {e}"),
                    Err(_) => tracing::warn!("unregister not answered in 5 s"),
                }
            }
            return Ok(());
        }

        // The session is gone (superseded or forgotten by the server): its attempts are no
        // longer ours, so nothing of them may keep running.
        session.cancel();
        let _ = heartbeat.await;
        let _ = control.await;
        let _ = pools.await;
        let n = ctx.attempts.stop_all(StopKind::Superseded);
        if n > 0 {
            tracing::warn!(steps = n, "killed running steps of the lost session");
        }
        wait_until_idle(ctx, Instant::now() + ctx.config.kill_grace + AFTER_KILL).await;
        ctx.attempts.forget_finished();
        if ctx.forgotten() {
            return Err(WorkerError::Forgotten {
                message: format!(
                    "worker \"{}\" was forgotten by an operator (rota worker forget): its running steps \
                     were killed and it does not register again on its own; start it again to rejoin (after \
                     --block, once `rota worker unblock {0}` ran)",
                    ctx.config.name
                ),
            });
        }
        if started.elapsed() < Duration::from_secs(10) {
            let delay = churn.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        } else {
            churn.reset();
        }
    }
}

/// Shutdown of a live session: warm waits up to `drain_timeout` for running steps (a soft
/// or hard request cuts it short), soft stops them with TERM→grace→KILL, hard KILLs them.
async fn drain(
    ctx: &Arc<Ctx>,
    executors: &TaskTracker,
    session: &CancellationToken,
    handle: &ShutdownHandle,
) {
    ctx.set_draining();
    let drain_timeout = ctx.fleet.tuning().drain_timeout;
    let mode = handle.requested().unwrap_or(crate::ShutdownMode::Warm);
    let running = ctx.attempts.running_count();
    // Says what this mode does to the running steps: only a warm stop lets them finish.
    match mode {
        crate::ShutdownMode::Warm => tracing::info!(
            running,
            drain_timeout_ms = drain_timeout.as_millis() as u64,
            %mode,
            "draining: no more claims, letting running steps finish within the drain timeout"
        ),
        crate::ShutdownMode::Soft => tracing::info!(
            running,
            %mode,
            "soft shutdown: no more claims, stopping the running steps (TERM, grace, KILL)"
        ),
        crate::ShutdownMode::Hard => {
            tracing::info!(running, %mode, "hard shutdown: no more claims, killing the running steps")
        }
    }
    executors.close();
    let finished = tokio::select! {
        () = executors.wait() => true,
        () = tokio::time::sleep(drain_timeout) => false,
        () = handle.soft().cancelled() => false,
        () = session.cancelled() => false,
    };
    if !finished {
        let kind = if session.is_cancelled() {
            StopKind::Superseded
        } else if handle.hard().is_cancelled() {
            StopKind::HardShutdown
        } else {
            StopKind::Shutdown
        };
        let n = ctx.attempts.stop_all(kind);
        match (kind, handle.requested()) {
            (StopKind::Shutdown, Some(crate::ShutdownMode::Soft)) => {
                tracing::warn!(steps = n, "soft shutdown: stopping the running steps (TERM, grace, KILL)")
            }
            (StopKind::HardShutdown, _) => {
                tracing::warn!(steps = n, "hard shutdown: killing the running steps")
            }
            _ => tracing::warn!(steps = n, "drain timeout reached: stopping the remaining steps"),
        }
        let bound = ctx.config.kill_grace + AFTER_KILL;
        let ended = tokio::select! {
            r = tokio::time::timeout(bound, executors.wait()) => r.is_ok(),
            () = handle.hard().cancelled(), if kind == StopKind::Shutdown => {
                tracing::warn!("hard shutdown: killing the running steps now");
                ctx.attempts.stop_all(StopKind::HardShutdown);
                tokio::time::timeout(AFTER_KILL, executors.wait()).await.is_ok()
            }
        };
        if !ended {
            tracing::error!("some steps did not end {bound:?} after being stopped");
        }
    }
    if session.is_cancelled() {
        return;
    }
    let deadline = Instant::now() + FLUSH_BOUND;
    ctx.logship.flush(ctx, deadline).await;
    ctx.reporter.flush(ctx, deadline).await;
    let left = ctx.reporter.pending();
    if left > 0 {
        tracing::warn!(results = left, "results could not be delivered before shutdown");
    }
}

/// Waits until no step runs, or `deadline`.
async fn wait_until_idle(ctx: &Ctx, deadline: Instant) {
    while ctx.attempts.running_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
