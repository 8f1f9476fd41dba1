//! Per-session command mailboxes behind `POST /worker/control`: operators (cancel, later
//! ping/inspect/shutdown) push commands, the worker's long-poll takes them. Delivery is
//! at most once; durable effects (cancel, revoke) are also carried by heartbeats.

use rota_api_types::worker::{Command, ControlCommand, ControlReply, Reply};
use rota_domain::SessionId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    // Both maps stay consistent under a panic elsewhere (every change is one insert, push,
    // drain or remove), so a poisoned lock is used as is rather than dropping commands.
    fn boxes(&self) -> MutexGuard<'_, HashMap<SessionId, Mailbox>> {
        self.boxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Reply>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a command for a session and wakes its long-poll. Returns the command id.
    pub(crate) fn push(&self, session: SessionId, command: Command) -> Uuid {
        let id = Uuid::now_v7();
        self.enqueue(session, ControlCommand { id, command });
        id
    }

    fn enqueue(&self, session: SessionId, command: ControlCommand) {
        let mut boxes = self.boxes();
        let mb = boxes.entry(session).or_default();
        mb.queue.push_back(command);
        mb.notify.notify_one();
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
        self.waiting().insert(id, tx);
        self.enqueue(session, ControlCommand { id, command });
        let reply = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        self.waiting().remove(&id);
        reply
    }

    /// Hands replies to whoever waits for them.
    pub(crate) fn deliver(&self, replies: Vec<ControlReply>) {
        let mut w = self.waiting();
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
            let mut boxes = self.boxes();
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
        self.boxes().get_mut(&session).map(|mb| mb.queue.drain(..).collect()).unwrap_or_default()
    }

    /// Forgets a session's mailbox (superseded or unregistered).
    pub(crate) fn drop_session(&self, session: SessionId) {
        if let Some(mb) = self.boxes().remove(&session) {
            mb.notify.notify_one();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_api_types::worker::StopOrder;
    use rota_domain::AttemptId;

    fn stop(attempt: i64) -> Command {
        Command::Stop(StopOrder {
            attempt_id: AttemptId(attempt),
            reason: rota_api_types::worker::StopReason::Cancelled,
            signal: None,
        })
    }

    /// A panic while a lock is held (poisoning it) must not make the hub drop commands:
    /// before, every later push was silently lost and every take came back empty.
    #[tokio::test]
    async fn commands_still_flow_after_a_panic_poisoned_the_locks() {
        let hub = Arc::new(Hub::default());
        let h = hub.clone();
        let _ = std::thread::spawn(move || {
            let _both = (h.boxes.lock().unwrap(), h.waiting.lock().unwrap());
            panic!("poisoning the hub's locks on purpose");
        })
        .join();
        assert!(hub.boxes.is_poisoned() && hub.waiting.is_poisoned());

        let session = SessionId::new();
        let id = hub.push(session, stop(1));
        let taken = hub.take(session, Duration::ZERO, &CancellationToken::new()).await;
        assert_eq!(taken.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id], "the pushed command");

        // A request and its reply go through the poisoned `waiting` map too.
        let requester = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.request(session, stop(2), Duration::from_secs(30)).await })
        };
        let sent = loop {
            let got = hub.take(session, Duration::from_millis(50), &CancellationToken::new()).await;
            if let Some(c) = got.into_iter().next() {
                break c;
            }
        };
        hub.deliver(vec![ControlReply { id: sent.id, reply: Reply::Done }]);
        assert!(requester.await.unwrap().is_some(), "the reply reached the requester");
    }
}
