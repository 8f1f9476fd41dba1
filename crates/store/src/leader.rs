//! Leadership: loops that must run once in the whole control plane (the sweeper now; the
//! schedulers and controllers of later issues) run only while their server leads. Which
//! server leads is the backend's business: with SQLite there is one server, so it always
//! leads ([`Solo`]); PostgreSQL will hold an advisory lock.
//!
//! Leadership is a hint, not a guarantee: two servers may briefly both believe they lead.
//! What a leader's loop writes is idempotent by construction in the store (a lease expires
//! once because expiry is a conditional update of a running attempt), so an overlap is safe.
//! This module owns the trait and the one-server implementation; it must not run loops.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// One server process of the control plane, fresh at every start (UUID v7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub Uuid);

impl ServerId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ServerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a server is, as shown by `rota server status` and `/healthz/detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// This start's id.
    pub id: ServerId,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// Whether this server leads, and who does.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// Takes leadership if nobody holds it, or keeps it; true while this server leads.
    /// Called before every round of a leader's loop, so it must be cheap.
    async fn lead(&self) -> Result<bool>;

    /// Gives leadership up (shutdown), so another server takes over without waiting.
    async fn resign(&self) -> Result<()>;

    /// The server that leads, as far as the backend knows (`None`: nobody right now).
    async fn leader(&self) -> Result<Option<ServerInfo>>;

    /// Whether another server of this control plane is serving and was serving before this
    /// one started. A server that starts while others serve must not extend every live
    /// lease: the others kept renewing them, and extending would keep dead workers' leases
    /// alive through a rolling restart. Servers that start together after a full outage
    /// (all restarted at once) each count as the first, so the leases are extended.
    async fn others_serving(&self) -> Result<bool>;
}

/// The one server of a single-server control plane (SQLite): it always leads and is never
/// joined by another.
pub struct Solo {
    me: ServerInfo,
}

impl Solo {
    /// Leadership of the one server `me`.
    pub fn new(me: ServerInfo) -> Self {
        Self { me }
    }
}

#[async_trait]
impl Leadership for Solo {
    async fn lead(&self) -> Result<bool> {
        Ok(true)
    }

    async fn resign(&self) -> Result<()> {
        Ok(())
    }

    async fn leader(&self) -> Result<Option<ServerInfo>> {
        Ok(Some(self.me.clone()))
    }

    async fn others_serving(&self) -> Result<bool> {
        Ok(false)
    }
}
