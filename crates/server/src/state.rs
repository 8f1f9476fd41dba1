//! Shared state handed to every handler: the store, settings, the bus (publishing side)
//! and leadership, the worker-credential cache, the control hub, and the local wake-ups
//! the bus feeds (`listen.rs`) that end long-polls early.

use crate::auth::AuthCache;
use crate::config::ServerConfig;
use crate::events::Publisher;
use crate::feed::Feed;
use crate::fleet_gauges::FleetGauges;
use crate::hub::Hub;
use crate::listen::Receivers;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::parking::Parking;
use crate::seams::Seams;
use rota_store::JobStore;
use rota_store::bus::Event;
use rota_store::leader::{Leadership, ServerInfo};
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
    /// This server's side of the bus: every change is published there.
    pub(crate) events: Arc<Publisher>,
    /// Whether this server runs the loops that must run once (the sweeper).
    pub(crate) leader: Arc<dyn Leadership>,
    /// Who this server is.
    pub(crate) me: Arc<ServerInfo>,
    /// Woken (by the bus) when steps may have become claimable.
    pub(crate) work: Arc<Notify>,
    /// Claim long-polls a submit can claim for in its own commit.
    pub(crate) parking: Arc<Parking>,
    /// When each session was last heard from: attempts go only to fresh ones.
    pub(crate) liveness: Arc<Liveness>,
    /// Bumped (by the bus) whenever log chunks or job states change, for `logs --follow`.
    pub(crate) progress: Arc<watch::Sender<u64>>,
    pub(crate) metrics: Arc<Metrics>,
    /// The leader's cached fleet snapshot for `/metrics` (empty elsewhere).
    pub(crate) fleet_gauges: Arc<FleetGauges>,
    /// The event stream (`GET /api/v1/events`), fed by the bus.
    pub(crate) feed: Arc<Feed>,
    /// Woken (by the bus) when a resource is applied or deleted: the schedule controller.
    pub(crate) resources: Arc<Notify>,
    /// Cancelled at shutdown so long-polls return at once.
    pub(crate) shutdown: CancellationToken,
    /// The supervisors' latest reports and pending heals (fed by links and the bus).
    pub(crate) supervisors: Arc<crate::supervisors::Supervisors>,
}

impl AppState {
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        config: ServerConfig,
        seams: Seams,
        shutdown: CancellationToken,
    ) -> Self {
        let (progress, _) = watch::channel(0u64);
        // Heard from within 1.5 heartbeat intervals: one late heartbeat is tolerated, a
        // second missing one is not.
        let fresh_window = config.heartbeat_interval.mul_f64(1.5);
        let events = Arc::new(Publisher::new(seams.me.id, seams.bus));
        let feed = Arc::new(Feed::new(seams.me.id));
        Self {
            store,
            config: Arc::new(config),
            auth: Arc::new(AuthCache::default()),
            hub: Arc::new(Hub::new(events.clone())),
            events,
            leader: seams.leader,
            me: Arc::new(seams.me),
            work: Arc::new(Notify::new()),
            parking: Arc::new(Parking::default()),
            liveness: Arc::new(Liveness::new(fresh_window)),
            progress: Arc::new(progress),
            metrics: Arc::new(Metrics::default()),
            fleet_gauges: Arc::new(FleetGauges::default()),
            feed,
            resources: Arc::new(Notify::new()),
            shutdown,
            supervisors: Arc::default(),
        }
    }

    /// What the bus wakes on this server (for `listen::run`, which ends at shutdown).
    pub(crate) fn receivers(&self) -> Receivers {
        Receivers {
            work: self.work.clone(),
            progress: self.progress.clone(),
            auth: self.auth.clone(),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
            feed: self.feed.clone(),
            resources: self.resources.clone(),
            supervisors: self.supervisors.clone(),
        }
    }

    /// Publishes the events of one write batch.
    pub(crate) fn publish(&self, events: Vec<Event>) {
        self.events.publish(events);
    }

    /// A session ended (unregistered, superseded, forgotten): this server forgets its cached
    /// credential, its control mailbox and when it was last heard from at once; the other
    /// servers when the bus's `Worker { ended }` tells them (listen.rs), or at the cache's
    /// re-check.
    pub(crate) fn session_ended(&self, session: rota_domain::SessionId) {
        self.auth.forget_session(session);
        self.hub.drop_session(session);
        self.liveness.forget(session);
    }

    /// Steps may have become claimable: claim long-polls on every server look again.
    pub(crate) fn wake_claimers(&self) {
        self.publish(vec![Event::Claimable]);
    }
}
