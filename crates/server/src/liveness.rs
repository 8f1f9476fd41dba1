//! When this server last heard from each worker session (its registration and heartbeats),
//! kept in memory so that handing attempts to parked claim long-polls can skip a session
//! the server has not heard from lately without a store read on the submit path. A cut
//! link sends no FIN, so a parked request looks open long after its worker stopped
//! answering; its heartbeats stopping is what shows it.
//!
//! Owns only the map and the freshness rule (the later of the last heartbeat and the
//! claim's own arrival is younger than the window); it must not decide what a claim may
//! take. Lost on restart: a claim's own arrival then speaks for its session.

use rota_domain::SessionId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Past this many entries, entries older than the window (which can no longer make a
/// session fresh) are dropped, so sessions that vanished without leaving are forgotten.
const PRUNE_AT: usize = 1024;

/// Last time each session was heard from.
pub(crate) struct Liveness {
    window: Duration,
    heard: Mutex<HashMap<SessionId, Instant>>,
}

impl Liveness {
    /// A session counts as heard from recently for `window` (1.5 heartbeat intervals).
    pub(crate) fn new(window: Duration) -> Self {
        Self { window, heard: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Instant>> {
        // A plain map of instants: consistent after any panic elsewhere.
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session was heard from now (registered or heartbeated).
    pub(crate) fn heard(&self, session: SessionId) {
        self.heard_at(session, Instant::now());
    }

    fn heard_at(&self, session: SessionId, now: Instant) {
        let mut heard = self.lock();
        heard.insert(session, now);
        if heard.len() > PRUNE_AT {
            let window = self.window;
            heard.retain(|_, at| now.saturating_duration_since(*at) < window);
        }
    }

    /// The session ended (superseded, unregistered).
    pub(crate) fn forget(&self, session: SessionId) {
        self.lock().remove(&session);
    }

    /// True if the later of the session's last heartbeat and `arrived` (when its claim
    /// arrived) is younger than the window at `now`.
    pub(crate) fn fresh(&self, session: SessionId, arrived: Instant, now: Instant) -> bool {
        let last = self.lock().get(&session).map_or(arrived, |at| (*at).max(arrived));
        now.saturating_duration_since(last) < self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn fresh_means_a_heartbeat_or_the_claim_itself_within_the_window() {
        let live = Liveness::new(secs(3.0));
        let (a, b) = (SessionId::new(), SessionId::new());
        let t0 = Instant::now();
        live.heard_at(a, t0);
        assert!(live.fresh(a, t0, t0 + secs(2.0)));
        assert!(live.fresh(b, t0, t0 + secs(2.0)), "a claim that just arrived speaks for its session");
        assert!(!live.fresh(a, t0, t0 + secs(3.5)), "3.5 s since the last heartbeat and the claim");
        assert!(!live.fresh(b, t0, t0 + secs(3.5)));
        assert!(live.fresh(a, t0 + secs(3.0), t0 + secs(3.5)), "a newer claim is fresh again");
        live.heard_at(b, t0 + secs(3.0));
        assert!(live.fresh(b, t0, t0 + secs(3.5)), "a heartbeat after an old claim makes it fresh");
        live.forget(b);
        assert!(!live.fresh(b, t0, t0 + secs(3.5)));
    }

    #[test]
    fn entries_too_old_to_matter_are_pruned() {
        let live = Liveness::new(secs(0.1));
        let t0 = Instant::now();
        for _ in 0..PRUNE_AT {
            live.heard_at(SessionId::new(), t0);
        }
        let kept = SessionId::new();
        live.heard_at(kept, t0 + secs(0.2));
        assert_eq!(live.lock().len(), 1, "only the entry heard from at the prune is kept");
        assert!(live.fresh(kept, t0, t0 + secs(0.25)));
    }
}
