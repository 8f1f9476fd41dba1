//! The handles every task of one worker shares: configuration, protocol client, held
//! attempts, log shipper, result reporter, the executors' tracker, lease timing, the current
//! session, the server's protocol minor and the draining flag. Plain state and small rules
//! about it; no loops live here.

use crate::attempts::{Attempts, StopKind, StopResult};
use crate::config::WorkerConfig;
use crate::kill;
use crate::logship::LogShip;
use crate::report::Reporter;
use crate::spawn::BaseEnv;
use crate::workspace::AttemptDirs;
use rota_api_types::worker::{StopOrder, StopReason};
use rota_client::WorkerClient;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Heartbeat and lease timing in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Time between heartbeats.
    pub(crate) heartbeat_interval: Duration,
    /// An attempt not renewed for this long is lost on the server.
    pub(crate) lease_ttl: Duration,
}

impl Lease {
    /// How long after sending the last renewing request an attempt may keep running:
    /// `ttl - margin`, margin = min(heartbeat interval, ttl / 4).
    pub(crate) fn fence_budget(&self) -> Duration {
        let margin = self.heartbeat_interval.min(self.lease_ttl / 4);
        self.lease_ttl.saturating_sub(margin)
    }
}

/// Shared state of one worker.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The configuration.
    pub(crate) config: WorkerConfig,
    /// The protocol client (holds the session credential).
    pub(crate) client: WorkerClient,
    /// Attempts held.
    pub(crate) attempts: Attempts,
    /// Output buffers and shipper.
    pub(crate) logship: Arc<LogShip>,
    /// Results waiting for delivery.
    pub(crate) reporter: Reporter,
    /// The running executors (one per attempt): started by the claim loop, and by the
    /// reporter for steps claimed with a result; waited for by a drain.
    pub(crate) executors: TaskTracker,
    /// Spawns steps and journals their process groups.
    pub(crate) spawner: crate::spawner::Spawner,
    /// Attempt directories (and the pool of empty ones).
    pub(crate) dirs: AttemptDirs,
    /// PATH/HOME/LANG/TZ captured at start.
    pub(crate) base_env: BaseEnv,
    /// Fleet-control state: counters, in-flight table, revokes, concurrency, recycling.
    pub(crate) fleet: crate::fleet::FleetState,
    /// The worker configs applied on this host (env, files, setup).
    pub(crate) host: crate::hostconfig::HostState,
    /// Wakes the heartbeat loop at once (draining started).
    pub(crate) heartbeat_now: Notify,
    /// The workspace's persistent instance id, sent with every registration.
    pub(crate) instance_id: Option<String>,
    lease: Mutex<Lease>,
    /// The tags registrations carry: the worker's own, or a pool's taken before the first
    /// claim of a session (`pool.rs`).
    tags: Mutex<Vec<String>>,
    session: Mutex<CancellationToken>,
    /// The protocol minor of the server the session registered with.
    server_minor: AtomicU32,
    draining: AtomicBool,
    /// An operator forgot this worker: its session loop ends with [`crate::WorkerError::Forgotten`].
    forgotten: AtomicBool,
}

impl Ctx {
    /// Shared state for a worker that has not registered yet.
    pub(crate) fn new(config: WorkerConfig, client: WorkerClient, spawner: crate::spawner::Spawner) -> Self {
        let lease = Lease {
            heartbeat_interval: config.heartbeat_interval.unwrap_or(Duration::from_secs(2)),
            lease_ttl: config.lease_ttl.unwrap_or(Duration::from_secs(10)),
        };
        let logship = Arc::new(LogShip::new(config.log_flush));
        let dirs = AttemptDirs::new(&config.workspace).owned_by(config.run_as.as_ref());
        let base_env = BaseEnv::from_process().for_user(config.run_as.as_ref());
        let fleet = crate::fleet::FleetState::new(&config);
        let tags = Mutex::new(config.tags.clone());
        Self {
            fleet,
            host: crate::hostconfig::HostState::default(),
            config,
            client,
            attempts: Attempts::default(),
            logship,
            reporter: Reporter::default(),
            executors: TaskTracker::new(),
            spawner,
            dirs,
            base_env,
            heartbeat_now: Notify::new(),
            instance_id: None,
            lease: Mutex::new(lease),
            tags,
            session: Mutex::new(CancellationToken::new()),
            server_minor: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            forgotten: AtomicBool::new(false),
        }
    }

    /// Sets the instance id registrations carry (read from the workspace by `run`).
    pub(crate) fn with_instance_id(mut self, id: String) -> Self {
        self.instance_id = Some(id);
        self
    }

    /// The tags the next registration carries.
    pub(crate) fn registered_tags(&self) -> Vec<String> {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Registers with `tags` from the next registration on.
    pub(crate) fn set_registered_tags(&self, tags: Vec<String>) {
        *self.tags.lock().unwrap_or_else(PoisonError::into_inner) = tags;
    }

    /// The lease timing in force.
    pub(crate) fn lease(&self) -> Lease {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the server's timing (register reply; `heartbeat_ms` 0 = keep), unless
    /// overridden by configuration. Heartbeats are kept at most a third of the TTL apart
    /// so one lost heartbeat never costs a lease.
    pub(crate) fn set_lease(&self, heartbeat_ms: u64, ttl_ms: u64) {
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        if ttl_ms > 0 {
            lease.lease_ttl = self.config.lease_ttl.unwrap_or(Duration::from_millis(ttl_ms));
        }
        if heartbeat_ms > 0 {
            lease.heartbeat_interval =
                self.config.heartbeat_interval.unwrap_or(Duration::from_millis(heartbeat_ms));
        }
        let cap = (lease.lease_ttl / 3).max(Duration::from_millis(50));
        lease.heartbeat_interval = lease.heartbeat_interval.min(cap);
    }

    /// Starts a new session after a successful registration.
    pub(crate) fn begin_session(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = token.clone();
        token
    }

    /// A call made with credential `generation` was answered 401 (`err`): if that is still
    /// the current credential, the session is over (superseded or unknown to the server). A
    /// `forgotten` 401 (an operator cut this worker off) also kills every running step at
    /// once, before anything else: the worker fences itself, and [`Ctx::forgotten`] tells
    /// the session loop to exit rather than register again.
    pub(crate) fn session_lost(&self, generation: u64, err: &rota_client::ClientError) {
        if generation == 0 || generation != self.client.credential_generation() {
            return;
        }
        if err.code() == Some(rota_api_types::worker::FORGOTTEN)
            && !self.forgotten.swap(true, Ordering::SeqCst)
        {
            let n = self.attempts.stop_all(crate::attempts::StopKind::Superseded);
            if n > 0 {
                tracing::error!(
                    steps = n,
                    "this worker was forgotten by an operator: its running steps were killed"
                );
            } else {
                tracing::error!("this worker was forgotten by an operator");
            }
        }
        let token = self.session.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !token.is_cancelled() {
            tracing::warn!("the server no longer accepts this session (401): superseded or forgotten");
            token.cancel();
        }
    }

    /// Notes the protocol minor of the server that answered the registration.
    pub(crate) fn set_server_minor(&self, minor: u32) {
        self.server_minor.store(minor, Ordering::Relaxed);
    }

    /// Whether a result may ask the server to claim for the slot it frees: the server
    /// knows how (minor 2), and the worker would claim for that slot now (not draining or
    /// shutting down, its session live). The concurrency and budget are the fleet's to
    /// say (`FleetState::refillable`).
    pub(crate) fn claims_with_results(&self) -> bool {
        self.server_minor.load(Ordering::Relaxed) >= rota_domain::MINOR_CLAIM_ON_COMPLETE
            && !self.is_draining()
            && self.fleet.shutdown_handle().is_none_or(|h| h.requested().is_none())
            && !self.session.lock().unwrap_or_else(PoisonError::into_inner).is_cancelled()
    }

    /// An operator forgot this worker (see [`Ctx::session_lost`]).
    pub(crate) fn forgotten(&self) -> bool {
        self.forgotten.load(Ordering::SeqCst)
    }

    /// True once a warm shutdown began.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the worker as draining and tells the server on the next heartbeat (now).
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.heartbeat_now.notify_one();
    }

    /// Carries out a stop order from a heartbeat reply or a control command.
    pub(crate) fn apply_stop(&self, order: &StopOrder) -> StopResult {
        let kind = match order.reason {
            StopReason::NotHeld => StopKind::NotHeld,
            StopReason::Cancelled | StopReason::Revoked | StopReason::Deadline => {
                StopKind::Cancel(kill::signal_from_raw(order.signal))
            }
        };
        let result = self.attempts.stop(order.attempt_id, kind);
        if result == StopResult::Stopping {
            tracing::info!(attempt_id = %order.attempt_id, reason = ?order.reason, "stopping attempt on the server's order");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_budget_uses_the_smaller_margin() {
        let l = Lease { heartbeat_interval: Duration::from_secs(2), lease_ttl: Duration::from_secs(10) };
        assert_eq!(l.fence_budget(), Duration::from_secs(8));
        let l = Lease { heartbeat_interval: Duration::from_secs(5), lease_ttl: Duration::from_secs(8) };
        assert_eq!(l.fence_budget(), Duration::from_secs(6));
    }
}
