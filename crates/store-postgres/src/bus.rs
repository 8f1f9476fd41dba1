//! The bus on PostgreSQL ([`PgBus`]): envelopes travel as `NOTIFY rota_bus` payloads (the
//! envelope's JSON) and are heard through `LISTEN rota_bus` on one dedicated connection per
//! server (`dedicated.rs`; it shows in `pg_stat_activity` as `rota-bus <server id>`), then
//! fanned out to this server's subscribers through a broadcast channel, like
//! `rota_store::bus::InProcessBus`. Owns that connection, the sending and the decoding;
//! must not decide what a receiver does with an event, and carries no correctness (every
//! waiter also looks at the store on a timer).
//!
//! - [`Bus::publish`] never blocks: it queues the encoded envelope to this bus's task, which
//!   sends one `SELECT pg_notify('rota_bus', $1)` per envelope, in order, on the same
//!   connection. The server publishes after the store has committed, so a notification never
//!   announces a write that is not visible. An envelope over [`MAX_ENVELOPE_BYTES`] (the
//!   publisher packs below it, `server/src/events.rs`), or one queued behind [`OUTBOX`]
//!   others, is dropped with a warning: that costs latency only.
//! - When the connection drops, the task reconnects with backoff, listens again, and then
//!   sends every subscriber [`Received::Missed`](rota_store::bus::Received::Missed): what was
//!   notified meanwhile is lost, so they look at the store. A payload that does not decode (a
//!   newer server's event) is also delivered as `Missed`.
//! - **A transaction-pooling proxy (pgbouncer with `pool_mode = transaction`) in front of
//!   the database breaks `LISTEN`**: the listening session is not kept. Nothing fails; rota
//!   then runs on its timers (claims re-check every second, log follows every second,
//!   credentials every 10 s) and only latency suffers. Point rota at the database or at a
//!   session-pooling proxy.

use crate::dedicated::{self, AbortOnDrop, ConnectionError, Role};
use rota_store::bus::{Bus, Delivery, Envelope, MAX_ENVELOPE_BYTES, Subscription};
use rota_store::leader::ServerId;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Client, Statement};

/// The notification channel of every rota server on a database.
pub const CHANNEL: &str = "rota_bus";
/// Envelopes a slow subscriber may fall behind by before it is told it missed some.
const BACKLOG: usize = 4096;
/// Envelopes waiting to be sent before new ones are dropped (the database is slow or away).
pub const OUTBOX: usize = 1024;

/// The bus of one server on a PostgreSQL database. Dropping it ends its connection.
pub struct PgBus {
    me: ServerId,
    tx: broadcast::Sender<Delivery>,
    outbox: mpsc::Sender<String>,
    _task: AbortOnDrop,
}

impl PgBus {
    /// Connects server `me`'s bus to the database at `url` and listens; envelopes published
    /// by any server from when this returns are delivered. Fails if the database cannot be
    /// reached; later losses of the connection are ridden out.
    pub async fn start(url: &str, me: ServerId) -> Result<Self, ConnectionError> {
        let config = dedicated::config(url, Role::Bus, me)?;
        let (tx, _) = broadcast::channel(BACKLOG);
        let live = Live::open(&config, &tx, me).await?;
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let task = tokio::spawn(run(config, me, live, tx.clone(), queued));
        Ok(Self { me, tx, outbox, _task: AbortOnDrop(task) })
    }
}

impl Bus for PgBus {
    fn publish(&self, envelope: Envelope) {
        let json = match serde_json::to_string(&envelope) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(server = %self.me, seq = envelope.seq, error = %e, "bus: cannot encode an envelope; dropped");
                return;
            }
        };
        if json.len() > MAX_ENVELOPE_BYTES {
            tracing::warn!(server = %self.me, seq = envelope.seq, bytes = json.len(), max = MAX_ENVELOPE_BYTES,
                "bus: envelope too big for NOTIFY; dropped (costs latency only)");
            return;
        }
        match self.outbox.try_send(json) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(server = %self.me, seq = envelope.seq, queued = OUTBOX,
                    "bus: too many envelopes waiting for the database; dropped (costs latency only)");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

/// A listening connection: the client that sends, and the task that drives the connection
/// and delivers what it hears (its end means the connection is gone).
struct Live {
    client: Client,
    notify: Statement,
    driver: AbortOnDrop,
}

impl Live {
    async fn open(
        config: &dedicated::Target,
        tx: &broadcast::Sender<Delivery>,
        me: ServerId,
    ) -> Result<Self, ConnectionError> {
        let (client, connection) = dedicated::open(config).await?;
        let driver = AbortOnDrop(tokio::spawn(hear(connection, tx.clone(), me)));
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let notify = client.prepare(&format!("SELECT pg_notify('{CHANNEL}', $1)")).await?;
        Ok(Self { client, notify, driver })
    }
}

/// Drives the connection, delivering each notification on the channel until it ends.
async fn hear(mut connection: dedicated::PgConnection, tx: broadcast::Sender<Delivery>, me: ServerId) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                let delivery = match serde_json::from_str::<Envelope>(n.payload()) {
                    Ok(envelope) => Delivery::Envelope(Arc::new(envelope)),
                    Err(e) => {
                        tracing::warn!(server = %me, error = %e, "bus: a message did not decode (a newer server's?); treated as missed");
                        Delivery::Missed
                    }
                };
                // No subscriber yet is not an error: nobody waits.
                let _ = tx.send(delivery);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(server = %me, error = %e, "bus: its connection failed");
                return;
            }
            None => return,
        }
    }
}

/// Sends what is published and reopens the connection when it drops, until the bus is
/// dropped.
async fn run(
    config: dedicated::Target,
    me: ServerId,
    mut live: Live,
    tx: broadcast::Sender<Delivery>,
    mut queued: mpsc::Receiver<String>,
) {
    loop {
        if !send_until_lost(&mut live, &mut queued, me).await {
            return;
        }
        drop(live);
        tracing::warn!(server = %me, "bus: lost its database connection; reconnecting (meanwhile waiters run on their timers)");
        // A short pause even before the first attempt: a connection that opens and drops
        // at once must not spin.
        let mut failures = 1u32;
        live = loop {
            tokio::time::sleep(dedicated::reconnect_delay(failures)).await;
            match Live::open(&config, &tx, me).await {
                Ok(l) => break l,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(server = %me, error = %e, failures, "bus: cannot reconnect; trying again");
                }
            }
        };
        tracing::info!(server = %me, "bus: listening again");
        // Listening again before this: whatever a subscriber then reads from the store
        // includes everything notified while the connection was down.
        let _ = tx.send(Delivery::Missed);
    }
}

/// Sends queued envelopes until the connection is lost (true) or the bus is dropped (false).
async fn send_until_lost(live: &mut Live, queued: &mut mpsc::Receiver<String>, me: ServerId) -> bool {
    loop {
        tokio::select! {
            biased;
            _ = &mut live.driver.0 => return true,
            json = queued.recv() => {
                let Some(json) = json else { return false };
                if let Err(e) = live.client.execute(&live.notify, &[&json]).await {
                    // Lost with the connection, which the driver's end reports next.
                    tracing::warn!(server = %me, error = %e, "bus: a NOTIFY failed; the envelope is lost (costs latency only)");
                    if live.client.is_closed() {
                        return true;
                    }
                }
            }
        }
    }
}
