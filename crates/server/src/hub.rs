//! Per-session command mailboxes behind `POST /worker/control`: operators (cancel, later
//! ping/inspect/shutdown) push commands, the worker's long-poll takes them. Delivery is
//! at most once; durable effects (cancel, revoke) are also carried by heartbeats.

use rota_api_types::worker::{Command, ControlCommand, ControlReply, Reply};
use rota_domain::SessionId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Mailbox {
    queue: VecDeque<ControlCommand>,
    notify: Arc<Notify>,
}

/// The mailboxes and the replies being waited for.
#[derive(Default)]
pub(crate) struct Hub {
    boxes: Mutex<HashMap<SessionId, Mailbox>>,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<Reply>>>,
}

impl Hub {
    /// Queues a command for a session and wakes its long-poll. Returns the command id.
    pub(crate) fn push(&self, session: SessionId, command: Command) -> Uuid {
        let id = Uuid::now_v7();
        if let Ok(mut boxes) = self.boxes.lock() {
            let mb = boxes.entry(session).or_default();
            mb.queue.push_back(ControlCommand { id, command });
            mb.notify.notify_one();
        }
        id
    }

    /// Sends a command and waits up to `timeout` for the worker's reply.
    pub(crate) async fn request(
        &self,
        session: SessionId,
        command: Command,
        timeout: Duration,
    ) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        let id = Uuid::now_v7();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, tx);
        }
        if let Ok(mut boxes) = self.boxes.lock() {
            let mb = boxes.entry(session).or_default();
            mb.queue.push_back(ControlCommand { id, command });
            mb.notify.notify_one();
        }
        let reply = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&id);
        }
        reply
    }

    /// Hands replies to whoever waits for them.
    pub(crate) fn deliver(&self, replies: Vec<ControlReply>) {
        let Ok(mut w) = self.waiting.lock() else { return };
        for r in replies {
            if let Some(tx) = w.remove(&r.id) {
                let _ = tx.send(r.reply);
            }
        }
    }

    /// Takes pending commands, waiting up to `wait` for the first.
    pub(crate) async fn take(
        &self,
        session: SessionId,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Vec<ControlCommand> {
        let notify = {
            let Ok(mut boxes) = self.boxes.lock() else { return Vec::new() };
            let mb = boxes.entry(session).or_default();
            if !mb.queue.is_empty() {
                return mb.queue.drain(..).collect();
            }
            mb.notify.clone()
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {}
        }
        match self.boxes.lock() {
            Ok(mut boxes) => {
                boxes.get_mut(&session).map(|mb| mb.queue.drain(..).collect()).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Forgets a session's mailbox (superseded or unregistered).
    pub(crate) fn drop_session(&self, session: SessionId) {
        if let Ok(mut boxes) = self.boxes.lock()
            && let Some(mb) = boxes.remove(&session)
        {
            mb.notify.notify_one();
        }
    }
}
