//! Shared state handed to every handler: the store, settings, the worker-credential cache,
//! the control hub and the wake-ups that end long-polls early.

use crate::auth::AuthCache;
use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::parking::Parking;
use rota_store::JobStore;
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Cloned into each request; everything inside is shared.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) auth: Arc<AuthCache>,
    pub(crate) hub: Arc<Hub>,
    /// Woken when steps may have become claimable (submit, completion, retry, lost).
    pub(crate) work: Arc<Notify>,
    /// Claim long-polls a submit can claim for in its own commit.
    pub(crate) parking: Arc<Parking>,
    /// When each session was last heard from: attempts go only to fresh ones.
    pub(crate) liveness: Arc<Liveness>,
    /// Bumped whenever log chunks or job states change, for `logs --follow`.
    pub(crate) progress: Arc<watch::Sender<u64>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled at shutdown so long-polls return at once.
    pub(crate) shutdown: CancellationToken,
}

impl AppState {
    pub(crate) fn new(store: Arc<dyn JobStore>, config: ServerConfig) -> Self {
        Self::with_shutdown(store, config, CancellationToken::new())
    }

    pub(crate) fn with_shutdown(
        store: Arc<dyn JobStore>,
        config: ServerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let (progress, _) = watch::channel(0u64);
        // Heard from within 1.5 heartbeat intervals: one late heartbeat is tolerated, a
        // second missing one is not.
        let fresh_window = config.heartbeat_interval.mul_f64(1.5);
        Self {
            store,
            config: Arc::new(config),
            auth: Arc::new(AuthCache::default()),
            hub: Arc::new(Hub::default()),
            work: Arc::new(Notify::new()),
            parking: Arc::new(Parking::default()),
            liveness: Arc::new(Liveness::new(fresh_window)),
            progress: Arc::new(progress),
            metrics: Arc::new(Metrics::default()),
            shutdown,
        }
    }

    /// Wakes every claim long-poll.
    pub(crate) fn wake_claimers(&self) {
        self.work.notify_waiters();
    }

    /// Wakes every log follower.
    pub(crate) fn bump_progress(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }
}
