//! Receiving from the bus: every envelope (this server's own included) is turned into the
//! local wake-ups it stands for: claim long-polls look again, log followers look again,
//! fleet commands reach the mailbox a worker long-polls, replies reach who waits, a
//! session's cached credential is forgotten, the event stream (`feed.rs`) hears every
//! envelope. A gap in an origin's sequence numbers, or a
//! subscriber that fell behind, is answered as if anything could have changed.
//!
//! Nothing here is needed for correctness: each waiter also looks at the store on a timer.
//! Must not write to the store.

use crate::auth::AuthCache;
use crate::feed::Feed;
use crate::hub::Hub;
use crate::metrics::Metrics;
use rota_store::bus::{Envelope, Event, Received, Subscription};
use rota_store::leader::ServerId;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// What the bus wakes on this server.
pub(crate) struct Receivers {
    pub(crate) work: Arc<Notify>,
    pub(crate) progress: Arc<watch::Sender<u64>>,
    pub(crate) auth: Arc<AuthCache>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) feed: Arc<Feed>,
    pub(crate) resources: Arc<Notify>,
    pub(crate) supervisors: Arc<crate::supervisors::Supervisors>,
}

impl Receivers {
    fn wake_claimers(&self) {
        self.work.notify_waiters();
    }

    fn bump_progress(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A message was missed: wake everything a message could have woken.
    fn missed(&self) {
        self.metrics.bus_missed();
        self.feed.missed();
        self.wake_claimers();
        self.bump_progress();
        self.auth.forget_all_sessions();
        self.auth.forget_credentials();
        self.resources.notify_one();
    }

    fn apply(&self, envelope: &Envelope) {
        self.feed.heard(envelope);
        let (mut claimable, mut progress) = (false, false);
        for event in &envelope.events {
            match event {
                Event::Claimable => claimable = true,
                Event::Job { .. } | Event::Attempt { .. } | Event::Logs { .. } => progress = true,
                Event::Worker { session, ended, .. } => {
                    progress = true;
                    if *ended {
                        self.auth.forget_session(*session);
                        self.hub.drop_session(*session);
                    }
                }
                // The schedule controller looks at once (it also looks every tick); not
                // for a status it (or a worker's report) wrote.
                Event::Resource { change, .. } if change.as_deref() != Some("status") => {
                    self.resources.notify_one()
                }
                Event::Resource { .. } => {}
                // Only the event stream shows these.
                Event::Supervisor { .. } | Event::Heal { .. } | Event::Other => {}
                Event::Credentials => self.auth.forget_credentials(),
                Event::Control { session, id, command } => self.hub.received_command(*session, *id, command),
                Event::ControlReply { id, reply } => self.hub.received_reply(*id, reply),
                Event::SupervisorReport { report } => match serde_json::from_str(report) {
                    Ok(r) => self.supervisors.report(r),
                    Err(e) => tracing::warn!("a supervisor report on the bus cannot be read: {e}"),
                },
                Event::HealCommand { host, key, id } => {
                    self.supervisors.queue_heal(&(host.clone(), key.clone()), *id)
                }
            }
        }
        if claimable {
            self.wake_claimers();
        }
        if progress {
            self.bump_progress();
        }
    }
}

/// Applies envelopes until shutdown or until the bus is gone.
pub(crate) async fn run(mut sub: Subscription, rx: Receivers, shutdown: CancellationToken) {
    let mut last: HashMap<ServerId, u64> = HashMap::new();
    loop {
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            got = sub.recv() => got,
        };
        match got {
            Received::Envelope(e) => {
                let prev = last.insert(e.origin, e.seq);
                // The first envelope seen from an origin may follow ones sent before we
                // subscribed: only a gap after that one counts.
                if prev.is_some_and(|p| e.seq != p + 1) {
                    tracing::debug!(origin = %e.origin, after = ?prev, seq = e.seq, "bus: missed envelopes");
                    rx.missed();
                }
                rx.apply(&e);
            }
            Received::Missed => {
                tracing::debug!("bus: fell behind");
                rx.missed();
            }
            Received::Closed => return,
        }
    }
}
