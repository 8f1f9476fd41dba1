//! Per-session command mailboxes behind `POST /worker/control`, fed by the bus: operators
//! (cancel, ping, inspect, shutdown, …) publish a command for a session; whichever server
//! the worker long-polls puts it in its mailbox (`listen.rs`), the worker's long-poll takes
//! it, and its reply travels back on the bus to whoever waits.
//!
//! The bus may lose a message. Every command is sent again about every [`RETRANSMIT`] until
//! its worker's reply (every command has one) arrives or its time is up, whether the caller
//! waits for it (a fleet request, a revoke) or not (a stop order, whose effect heartbeats
//! also carry); every server remembers the commands it delivered (and
//! their replies) for a while, so a repeat is never delivered twice and a lost reply is
//! sent again.
//!
//! A server keeps a mailbox only for the sessions that long-poll it: a command on the bus
//! for a worker polling another server is ignored here (not recorded as delivered), and a
//! mailbox no poll has taken from for [`POLLED_WITHIN`] is dropped with what it held. A
//! worker that moves to this server gets its pending commands from their retransmissions.

use crate::events::Publisher;
use rota_api_types::worker::{Command, ControlCommand, ControlReply, Reply};
use rota_domain::SessionId;
use rota_store::bus::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often (on average, jittered ±50 %) a request is sent again while no reply came.
pub(crate) const RETRANSMIT: Duration = Duration::from_millis(250);

/// How long a delivered command's id (and its reply) is remembered: longer than any request
/// waits.
const REMEMBER: Duration = Duration::from_secs(300);

/// A command delivered here that has had no reply for this long is delivered again when its
/// next retransmission arrives: the long-poll answer that carried it may have been lost, or
/// its mailbox dropped. Commands are idempotent for the worker (a second ping is answered
/// again, a second stop finds the step stopped); a reply that comes twice is used once.
const REDELIVER_AFTER: Duration = Duration::from_secs(5);

/// A session whose worker has not long-polled this server for this long no longer has a
/// mailbox here: longer than any long-poll waits (30 s at most) plus the worker's pause
/// between two polls.
const POLLED_WITHIN: Duration = Duration::from_secs(90);

struct Mailbox {
    queue: VecDeque<ControlCommand>,
    notify: Arc<Notify>,
    /// When a poll last began or ended here.
    polled: Instant,
}

impl Mailbox {
    fn new() -> Self {
        Self { queue: VecDeque::new(), notify: Arc::default(), polled: Instant::now() }
    }
}

/// A command delivered to a mailbox here, and its reply once the worker gave it.
struct Delivered {
    at: Instant,
    reply: Option<String>,
}

/// The mailboxes of the sessions polling here, and when stale ones were last dropped.
struct Boxes {
    by_session: HashMap<SessionId, Mailbox>,
    swept: Instant,
}

impl Boxes {
    /// Drops the mailboxes no poll has touched for [`POLLED_WITHIN`], at most once a
    /// [`POLLED_WITHIN`], so a worker that moved to another server or died leaves nothing
    /// behind.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < POLLED_WITHIN {
            return;
        }
        self.swept = now;
        self.by_session.retain(|_, mb| now.duration_since(mb.polled) < POLLED_WITHIN);
    }
}

/// The mailboxes, the replies being waited for, and the commands delivered lately.
pub(crate) struct Hub {
    boxes: Mutex<Boxes>,
    waiting: Mutex<HashMap<Uuid, oneshot::Sender<Reply>>>,
    delivered: Mutex<HashMap<Uuid, Delivered>>,
    publisher: Arc<Publisher>,
}

/// A poisoned lock is used as is: every change to these maps is one insert, push, drain or
/// remove, so they stay consistent under a panic elsewhere, and dropping commands would not.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    pub(crate) fn new(publisher: Arc<Publisher>) -> Self {
        let boxes = Boxes { by_session: HashMap::new(), swept: Instant::now() };
        Self { boxes: Mutex::new(boxes), waiting: Mutex::default(), delivered: Mutex::default(), publisher }
    }

    fn send(&self, session: SessionId, id: Uuid, command: &str) {
        self.publisher.publish(vec![Event::Control { session, id, command: command.to_string() }]);
    }

    /// Sends each command until its worker acknowledges it or `within` passes, in the
    /// background: delivery survives lost messages, and the worker sees each command once.
    pub(crate) fn push_all(self: &Arc<Self>, commands: Vec<(SessionId, Command)>, within: Duration) {
        drop(self.spawn_requests(commands, within));
    }

    /// As [`Hub::push_all`], then waits up to `wait` for the acknowledgements. Returns how
    /// many came in that time (the others are still sent until `within`).
    pub(crate) async fn send_all(
        self: &Arc<Self>,
        commands: Vec<(SessionId, Command)>,
        within: Duration,
        wait: Duration,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        let mut acked = 0;
        for ask in self.spawn_requests(commands, within) {
            if let Ok(Ok(true)) = tokio::time::timeout_at(deadline, ask).await {
                acked += 1;
            }
        }
        acked
    }

    fn spawn_requests(
        self: &Arc<Self>,
        commands: Vec<(SessionId, Command)>,
        within: Duration,
    ) -> Vec<tokio::task::JoinHandle<bool>> {
        commands
            .into_iter()
            .map(|(session, command)| {
                let hub = self.clone();
                tokio::spawn(async move { hub.request(session, command, within).await.is_some() })
            })
            .collect()
    }

    /// Sends a command and waits up to `timeout` for the worker's reply, sending it again
    /// about every [`RETRANSMIT`] meanwhile.
    pub(crate) async fn request(
        &self,
        session: SessionId,
        command: Command,
        timeout: Duration,
    ) -> Option<Reply> {
        let command = encode(&command)?;
        let (tx, mut rx) = oneshot::channel();
        let id = Uuid::now_v7();
        lock(&self.waiting).insert(id, tx);
        let deadline = tokio::time::Instant::now() + timeout;
        let reply = loop {
            self.send(session, id, &command);
            tokio::select! {
                r = &mut rx => break r.ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
                // Jittered, so requests sent together do not stay in lockstep (a transport
                // that loses messages in a pattern would lose the same ones every round).
                _ = tokio::time::sleep(RETRANSMIT.mul_f64(rand::random_range(0.5..1.5))) => {}
            }
        };
        lock(&self.waiting).remove(&id);
        reply
    }

    /// Replies a worker carried in its long-poll: remembered (a repeated command gets them
    /// again) and published for whoever waits.
    pub(crate) fn deliver(&self, replies: Vec<ControlReply>) {
        if replies.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(replies.len());
        {
            let mut delivered = lock(&self.delivered);
            for r in replies {
                let Some(reply) = encode(&r.reply) else { continue };
                if let Some(d) = delivered.get_mut(&r.id) {
                    d.reply = Some(reply.clone());
                }
                events.push(Event::ControlReply { id: r.id, reply });
            }
        }
        self.publisher.publish(events);
    }

    /// A command arrived on the bus: into the session's mailbox, unless it was delivered
    /// already (a retransmission), in which case its reply, if any, is sent again — even
    /// when its worker is gone, since the reply may be what was lost. A new command is
    /// ignored when the session does not poll this server (its server delivers it).
    pub(crate) fn received_command(&self, session: SessionId, id: Uuid, command: &str) {
        {
            let delivered = lock(&self.delivered);
            match delivered.get(&id) {
                Some(d) if d.reply.is_some() => {
                    let reply = d.reply.clone().unwrap_or_default();
                    drop(delivered);
                    // The reply was lost at least once: send it in two envelopes, so one
                    // more loss does not cost another round.
                    self.publisher.publish(vec![Event::ControlReply { id, reply: reply.clone() }]);
                    self.publisher.publish(vec![Event::ControlReply { id, reply }]);
                    return;
                }
                // A repeat of a command delivered lately and not answered yet.
                Some(d) if d.at.elapsed() < REDELIVER_AFTER => return,
                // New, or delivered long ago without an answer: deliver (again).
                _ => {}
            }
        }
        if !self.polls_here(session) {
            return;
        }
        {
            let mut delivered = lock(&self.delivered);
            let now = Instant::now();
            if delivered.len() >= 1024 {
                delivered.retain(|_, d| now.duration_since(d.at) < REMEMBER);
            }
            delivered.insert(id, Delivered { at: now, reply: None });
        }
        match serde_json::from_str::<Command>(command) {
            Ok(command) => self.enqueue(session, ControlCommand { id, command }),
            Err(e) => tracing::warn!(%session, %id, "bus: a control command this server cannot read: {e}"),
        }
    }

    /// A reply arrived on the bus: to whoever waits for it here.
    pub(crate) fn received_reply(&self, id: Uuid, reply: &str) {
        let Some(tx) = lock(&self.waiting).remove(&id) else { return };
        match serde_json::from_str::<Reply>(reply) {
            Ok(reply) => {
                let _ = tx.send(reply);
            }
            Err(e) => tracing::warn!(%id, "bus: a control reply this server cannot read: {e}"),
        }
    }

    /// Whether `session` has a mailbox here (its worker long-polled here lately).
    fn polls_here(&self, session: SessionId) -> bool {
        let mut boxes = lock(&self.boxes);
        boxes.sweep(Instant::now());
        boxes.by_session.contains_key(&session)
    }

    fn enqueue(&self, session: SessionId, command: ControlCommand) {
        let mut boxes = lock(&self.boxes);
        // Dropped by a sweep since `polls_here`: the command's retransmission finds the
        // worker wherever it polls next.
        let Some(mb) = boxes.by_session.get_mut(&session) else { return };
        if mb.queue.iter().any(|c| c.id == command.id) {
            return; // delivered again while the first copy still waits to be taken
        }
        mb.queue.push_back(command);
        mb.notify.notify_one();
    }

    /// Takes pending commands, waiting up to `wait` for the first.
    pub(crate) async fn take(
        &self,
        session: SessionId,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Vec<ControlCommand> {
        let notify = {
            let mut boxes = lock(&self.boxes);
            let now = Instant::now();
            boxes.sweep(now);
            let mb = boxes.by_session.entry(session).or_insert_with(Mailbox::new);
            mb.polled = now;
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
        let mut boxes = lock(&self.boxes);
        let Some(mb) = boxes.by_session.get_mut(&session) else { return Vec::new() };
        mb.polled = Instant::now();
        mb.queue.drain(..).collect()
    }

    /// Forgets a session's mailbox (superseded or unregistered).
    pub(crate) fn drop_session(&self, session: SessionId) {
        if let Some(mb) = lock(&self.boxes).by_session.remove(&session) {
            mb.notify.notify_one();
        }
    }
}

/// Runs the futures concurrently (each a task) and returns their outputs in order.
pub(crate) async fn join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn encode<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).inspect_err(|e| tracing::error!("cannot encode a control message: {e}")).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_api_types::worker::StopOrder;
    use rota_domain::AttemptId;
    use rota_store::bus::{Bus, InProcessBus, Received};
    use rota_store::leader::ServerId;

    fn stop(attempt: i64) -> Command {
        Command::Stop(StopOrder {
            attempt_id: AttemptId(attempt),
            reason: rota_api_types::worker::StopReason::Cancelled,
            signal: None,
        })
    }

    /// A hub on a bus that loses every `drop_every`th envelope, with the part of
    /// `listen.rs` that feeds it.
    fn hub_on_a_bus(drop_every: u64) -> Arc<Hub> {
        let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
        let mut sub = bus.subscribe();
        let hub = Arc::new(Hub::new(Arc::new(Publisher::new(ServerId::new(), bus))));
        let h = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Received::Envelope(e) = sub.recv().await {
                n += 1;
                let Some(hub) = h.upgrade() else { return };
                if drop_every > 0 && n.is_multiple_of(drop_every) {
                    continue;
                }
                for ev in &e.events {
                    match ev {
                        Event::Control { session, id, command } => {
                            hub.received_command(*session, *id, command)
                        }
                        Event::ControlReply { id, reply } => hub.received_reply(*id, reply),
                        _ => {}
                    }
                }
            }
        });
        hub
    }

    async fn worker_answers(hub: &Hub, session: SessionId, rounds: usize) -> usize {
        let mut seen = 0;
        for _ in 0..rounds {
            let got = hub.take(session, Duration::from_millis(50), &CancellationToken::new()).await;
            seen += got.len();
            hub.deliver(got.into_iter().map(|c| ControlReply { id: c.id, reply: Reply::Done }).collect());
        }
        seen
    }

    /// A panic while a lock is held (poisoning it) must not make the hub drop commands:
    /// before, every later push was silently lost and every take came back empty.
    #[tokio::test]
    async fn commands_still_flow_after_a_panic_poisoned_the_locks() {
        let hub = hub_on_a_bus(0);
        let h = hub.clone();
        let _ = std::thread::spawn(move || {
            let _both = (h.boxes.lock().unwrap(), h.waiting.lock().unwrap());
            panic!("poisoning the hub's locks on purpose");
        })
        .join();
        assert!(hub.boxes.is_poisoned() && hub.waiting.is_poisoned());

        let session = SessionId::new();
        hub.push_all(vec![(session, stop(1))], Duration::from_secs(30));
        let taken = hub.take(session, Duration::from_secs(5), &CancellationToken::new()).await;
        assert_eq!(taken.len(), 1, "the pushed command: {taken:?}");
        hub.deliver(vec![ControlReply { id: taken[0].id, reply: Reply::Done }]);

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

    /// Two servers on one bus: a request made through A for a worker polling B reaches it
    /// through B, is answered, and A keeps no mailbox (nor queued commands) for it.
    #[tokio::test]
    async fn only_the_server_a_worker_polls_keeps_its_mailbox() {
        let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
        let a = Arc::new(Hub::new(Arc::new(Publisher::new(ServerId::new(), bus.clone()))));
        let b = Arc::new(Hub::new(Arc::new(Publisher::new(ServerId::new(), bus.clone()))));
        for hub in [&a, &b] {
            let mut sub = bus.subscribe();
            let h = Arc::downgrade(hub);
            tokio::spawn(async move {
                while let Received::Envelope(e) = sub.recv().await {
                    let Some(hub) = h.upgrade() else { return };
                    for ev in &e.events {
                        match ev {
                            Event::Control { session, id, command } => {
                                hub.received_command(*session, *id, command)
                            }
                            Event::ControlReply { id, reply } => hub.received_reply(*id, reply),
                            _ => {}
                        }
                    }
                }
            });
        }
        let session = SessionId::new();
        let requester = {
            let a = a.clone();
            tokio::spawn(async move { a.request(session, stop(7), Duration::from_secs(30)).await })
        };
        let started = Instant::now();
        let mut seen = 0;
        while !requester.is_finished() {
            seen += worker_answers(&b, session, 1).await;
            assert!(started.elapsed() < Duration::from_secs(20), "never answered");
        }
        assert!(requester.await.unwrap().is_some());
        assert_eq!(seen, 1, "delivered once, by B");
        eprintln!("answered through B after {:?}", started.elapsed());
        assert!(!a.boxes.lock().unwrap().by_session.contains_key(&session), "A has no mailbox for it");
    }

    /// A command whose long-poll answer was lost (taken, never answered) is delivered again
    /// by a later retransmission, and the request is answered.
    #[tokio::test]
    async fn a_command_taken_but_never_answered_is_delivered_again() {
        let hub = hub_on_a_bus(0);
        let session = SessionId::new();
        let _ = hub.take(session, Duration::from_millis(10), &CancellationToken::new()).await;
        let requester = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.request(session, stop(9), Duration::from_secs(30)).await })
        };
        let first = loop {
            let got = hub.take(session, Duration::from_millis(50), &CancellationToken::new()).await;
            if let Some(c) = got.into_iter().next() {
                break c; // ... and its answer is lost
            }
        };
        let lost_at = Instant::now();
        let again = loop {
            let got = hub.take(session, Duration::from_millis(50), &CancellationToken::new()).await;
            if let Some(c) = got.into_iter().next() {
                break c;
            }
            assert!(lost_at.elapsed() < Duration::from_secs(20), "never delivered again");
        };
        assert_eq!(again.id, first.id);
        eprintln!("delivered again {:?} after the first copy was lost", lost_at.elapsed());
        hub.deliver(vec![ControlReply { id: again.id, reply: Reply::Done }]);
        assert!(requester.await.unwrap().is_some(), "the request was answered");
    }

    /// A mailbox no poll touched for [`POLLED_WITHIN`] is dropped with what it held.
    #[test]
    fn a_mailbox_nobody_polls_is_dropped() {
        let (Some(long_ago), now) = (Instant::now().checked_sub(POLLED_WITHIN * 2), Instant::now()) else {
            return; // this host booted less than three minutes ago: no instant that old exists
        };
        let (stale, fresh) = (SessionId::new(), SessionId::new());
        let mut boxes = Boxes { by_session: HashMap::new(), swept: long_ago };
        boxes.by_session.insert(stale, Mailbox { polled: long_ago, ..Mailbox::new() });
        boxes.by_session.insert(fresh, Mailbox::new());
        boxes.sweep(now);
        assert!(!boxes.by_session.contains_key(&stale));
        assert!(boxes.by_session.contains_key(&fresh));
    }

    /// On a bus that loses every other message (commands and replies alike), a request is
    /// still answered, and the worker sees it exactly once.
    #[tokio::test]
    async fn a_request_is_answered_once_over_a_bus_that_loses_every_other_message() {
        let hub = hub_on_a_bus(2);
        let session = SessionId::new();
        for i in 0..5 {
            let requester = {
                let hub = hub.clone();
                tokio::spawn(async move { hub.request(session, stop(i), Duration::from_secs(30)).await })
            };
            let started = Instant::now();
            let mut seen = 0;
            while !requester.is_finished() {
                seen += worker_answers(&hub, session, 1).await;
                assert!(started.elapsed() < Duration::from_secs(20), "request {i} never answered");
            }
            assert!(requester.await.unwrap().is_some(), "request {i} answered");
            seen += worker_answers(&hub, session, 8).await;
            assert_eq!(seen, 1, "request {i} reached the worker exactly once");
            eprintln!("request {i} answered after {:?}", started.elapsed());
        }
    }
}
