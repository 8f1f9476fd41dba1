//! What a server needs from its backend besides the store: the bus it tells the other
//! servers on, and leadership. The composition root (the CLI) builds them; for SQLite (one
//! server) that is [`Seams::single`]: the in-process bus, and this server always leads.

use rota_store::bus::{Bus, InProcessBus};
use rota_store::leader::{Leadership, ServerId, ServerInfo, Solo};
use std::sync::Arc;

/// The bus, leadership and identity of one server process.
#[derive(Clone)]
pub struct Seams {
    /// Where changes are published and heard.
    pub bus: Arc<dyn Bus>,
    /// Whether this server runs the loops that must run once.
    pub leader: Arc<dyn Leadership>,
    /// Who this server is.
    pub me: ServerInfo,
}

impl Seams {
    /// A server that is the whole control plane (SQLite, `rota dev`): in-process bus, always
    /// the leader. `host` is shown by `rota server status`.
    pub fn single(host: impl Into<String>) -> Self {
        let me = this_process(host);
        Self { bus: in_process_bus(), leader: Arc::new(Solo::new(me.clone())), me }
    }

    /// These seams with another leadership (tests force it on or off).
    pub fn with_leader(self, leader: Arc<dyn Leadership>) -> Self {
        Self { leader, ..self }
    }
}

/// A fresh identity for this process.
pub fn this_process(host: impl Into<String>) -> ServerInfo {
    ServerInfo {
        id: ServerId::new(),
        host: host.into(),
        pid: std::process::id(),
        started_at: chrono::Utc::now(),
    }
}

/// The in-process bus. Built with the feature `test-bus` (tests only, never a release), the
/// environment variable `ROTA_TEST_BUS_DROP_EVERY=N` makes it lose every Nth envelope, to
/// prove that the timers, not the messages, carry correctness.
fn in_process_bus() -> Arc<dyn Bus> {
    #[cfg(feature = "test-bus")]
    if let Some(n) = std::env::var("ROTA_TEST_BUS_DROP_EVERY").ok().and_then(|v| v.parse::<u64>().ok()) {
        tracing::warn!(every = n, "test bus: losing one bus message in every {n}");
        return Arc::new(rota_store::bus::DropEvery::new(n));
    }
    Arc::new(InProcessBus::default())
}
