//! The event stream's source: every bus envelope this server hears (`listen.rs`) becomes
//! numbered stream events (`SERVER-N`), kept in a bounded replay buffer of
//! [`REPLAY_CAPACITY`] events and fanned out to the connected clients through one
//! broadcast channel of [`CLIENT_QUEUE`] slots (a client that falls that far behind is
//! dropped with a `resync`: memory never grows with a slow client).
//!
//! A missed bus message (a gap in an origin's sequence numbers, a lost listener connection)
//! becomes a `resync` marker in the sequence: connected clients receive it, and a client
//! reconnecting from before it receives a `resync` instead of a replay with a hole. It owns
//! numbering, replay and namespace fill-in; it must not know HTTP (that is
//! `routes/events.rs`) or write to the store.

use rota_api_types::events::StreamEvent;
use rota_domain::{AttemptId, JobId};
use rota_store::bus::{Envelope, Event};
use rota_store::leader::ServerId;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for clients that reconnect with `Last-Event-ID` (documented in the README).
pub(crate) const REPLAY_CAPACITY: usize = 4096;

/// Events a connected client may fall behind by before it is dropped with a `resync`.
pub(crate) const CLIENT_QUEUE: usize = 1024;

/// Jobs (and attempts) whose namespace (and worker) this server remembers, to fill in bus
/// events that do not carry them (the sweeper's lost attempts, deadlines, older servers).
const REMEMBERED: usize = 16_384;

/// Why a client is told to reload its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResyncWhy {
    /// This server missed bus messages.
    Missed,
    /// The client's last id is not in this server's replay buffer (too old, or another
    /// server's, or this server restarted).
    StaleId,
    /// The client fell too far behind.
    Slow,
}

impl ResyncWhy {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ResyncWhy::Missed => "missed",
            ResyncWhy::StaleId => "stale_id",
            ResyncWhy::Slow => "slow",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            ResyncWhy::Missed => "the server missed bus messages: reload state, then carry on",
            ResyncWhy::StaleId => {
                "the last event id is not in this server's replay buffer: reload state, then carry on"
            }
            ResyncWhy::Slow => "this client fell too far behind: reload state and reconnect",
        }
    }
}

/// A map that forgets its oldest entries beyond a bound.
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Copy, V> Recent<K, V> {
    fn new() -> Self {
        Self { map: HashMap::new(), order: VecDeque::new() }
    }

    fn put(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            if self.order.len() > REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
}

struct Inner {
    /// The next event's number.
    next: u64,
    buffer: VecDeque<Arc<StreamEvent>>,
    /// The number of the latest `resync` marker (0: none yet).
    last_gap: u64,
    namespaces: Recent<JobId, String>,
    workers: Recent<AttemptId, String>,
}

/// This server's event stream.
pub(crate) struct Feed {
    epoch: String,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<StreamEvent>>,
}

/// What a connecting client starts with.
pub(crate) struct Start {
    /// A `resync` to send first (nothing is replayed then).
    pub(crate) resync: Option<StreamEvent>,
    /// The events it missed, in order.
    pub(crate) replay: Vec<Arc<StreamEvent>>,
    /// The id of the newest event at connection: where the live events continue from.
    pub(crate) position: String,
    /// The live events.
    pub(crate) live: broadcast::Receiver<Arc<StreamEvent>>,
}

impl Feed {
    pub(crate) fn new(me: ServerId) -> Self {
        Self {
            epoch: me.0.simple().to_string(),
            inner: Mutex::new(Inner {
                next: 1,
                buffer: VecDeque::new(),
                last_gap: 0,
                namespaces: Recent::new(),
                workers: Recent::new(),
            }),
            tx: broadcast::channel(CLIENT_QUEUE).0,
        }
    }

    fn id(&self, n: u64) -> String {
        format!("{}-{n}", self.epoch)
    }

    /// The number of an id of this server, `None` for another server's (or garbage).
    fn number(&self, id: &str) -> Option<u64> {
        let (epoch, n) = id.rsplit_once('-')?;
        (epoch == self.epoch).then(|| n.parse().ok()).flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A `resync` event for a client (not numbered: it carries the position it leaves the
    /// client at).
    pub(crate) fn resync_event(&self, id: String, why: ResyncWhy) -> StreamEvent {
        StreamEvent {
            id,
            kind: "resync".into(),
            at: chrono::Utc::now(),
            detail: Some(why.detail().into()),
            state: Some(why.label().into()),
            ..StreamEvent::default()
        }
    }

    /// The stream events of an envelope, numbered and sent.
    pub(crate) fn heard(&self, envelope: &Envelope) {
        let mut inner = self.lock();
        for e in &envelope.events {
            if let Some(mut ev) = to_stream(e) {
                fill_in(&mut inner, &mut ev);
                self.push(&mut inner, ev);
            }
        }
    }

    /// This server missed bus messages: a `resync` marker in the sequence.
    pub(crate) fn missed(&self) {
        let mut inner = self.lock();
        let ev = self.resync_event(String::new(), ResyncWhy::Missed);
        let n = self.push(&mut inner, ev);
        inner.last_gap = n;
    }

    fn push(&self, inner: &mut Inner, mut ev: StreamEvent) -> u64 {
        let n = inner.next;
        inner.next += 1;
        ev.id = self.id(n);
        let ev = Arc::new(ev);
        inner.buffer.push_back(ev.clone());
        if inner.buffer.len() > REPLAY_CAPACITY {
            inner.buffer.pop_front();
        }
        // No client connected is not an error.
        let _ = self.tx.send(ev);
        n
    }

    /// The newest `n` buffered events `wanted` admits, oldest first (the dashboard's recent
    /// heal progress, read when a page renders).
    pub(crate) fn recent(&self, n: usize, wanted: impl Fn(&StreamEvent) -> bool) -> Vec<Arc<StreamEvent>> {
        let inner = self.lock();
        let mut found: Vec<Arc<StreamEvent>> =
            inner.buffer.iter().rev().filter(|e| wanted(e)).take(n).cloned().collect();
        found.reverse();
        found
    }

    /// The id of the newest event.
    pub(crate) fn position(&self) -> String {
        let inner = self.lock();
        self.id(inner.next - 1)
    }

    /// Where a client connecting after `last` (its `Last-Event-ID`) starts: the events it
    /// missed, or a `resync` when they cannot all be given (too old, another server's id,
    /// a gap this server had since). Without `last`: the buffer since the latest gap.
    pub(crate) fn connect(&self, last: Option<&str>) -> Start {
        let inner = self.lock();
        let newest = inner.next - 1;
        let oldest = inner.buffer.front().map_or(inner.next, |e| self.number(&e.id).unwrap_or(inner.next));
        let position = self.id(newest);
        let live = self.tx.subscribe();
        let from = match last {
            None => Ok(inner.last_gap),
            Some(id) => match self.number(id) {
                // Every event after `n` is still here, and no gap came after it.
                Some(n) if n <= newest && n + 1 >= oldest && inner.last_gap <= n => Ok(n),
                Some(n) if n <= newest && n + 1 >= oldest => Err(ResyncWhy::Missed),
                _ => Err(ResyncWhy::StaleId),
            },
        };
        match from {
            Ok(n) => {
                let replay =
                    inner.buffer.iter().filter(|e| self.number(&e.id).is_some_and(|m| m > n)).cloned();
                Start { resync: None, replay: replay.collect(), position, live }
            }
            Err(why) => Start {
                resync: Some(self.resync_event(position.clone(), why)),
                replay: Vec::new(),
                position,
                live,
            },
        }
    }
}

/// The namespace (and worker) of events that do not carry them, from earlier events of the
/// same job (attempt); remembered from those that do.
fn fill_in(inner: &mut Inner, ev: &mut StreamEvent) {
    if let Some(job) = ev.job {
        match &ev.namespace {
            Some(ns) => inner.namespaces.put(job, ns.clone()),
            None => ev.namespace = inner.namespaces.get(&job).cloned(),
        }
    }
    if let Some(attempt) = ev.attempt {
        match &ev.worker {
            Some(w) => inner.workers.put(attempt, w.clone()),
            None => ev.worker = inner.workers.get(&attempt).cloned(),
        }
    }
}

/// What a bus event shows on the stream (`None`: nothing, e.g. claim wake-ups).
fn to_stream(e: &Event) -> Option<StreamEvent> {
    let base =
        |kind: &str| StreamEvent { kind: kind.into(), at: chrono::Utc::now(), ..StreamEvent::default() };
    Some(match e {
        Event::Job { job, state, namespace } => StreamEvent {
            job: Some(*job),
            state: state.map(|s| s.as_str().to_string()),
            namespace: namespace.clone(),
            ..base("job")
        },
        Event::Attempt { job, step, attempt, status, namespace, worker } => StreamEvent {
            job: Some(*job),
            step: Some(step.clone()),
            attempt: Some(*attempt),
            state: Some(status.as_str().to_string()),
            namespace: namespace.clone(),
            worker: worker.clone(),
            ..base("attempt")
        },
        Event::Logs { job, namespace } => {
            StreamEvent { job: Some(*job), namespace: namespace.clone(), ..base("logs") }
        }
        Event::Worker { session, ended, namespace, name } => StreamEvent {
            session: Some(*session),
            state: Some(if *ended { "offline" } else { "active" }.into()),
            namespace: namespace.clone(),
            worker: name.clone(),
            ..base("worker")
        },
        Event::Resource { resource, name, namespace, change } => StreamEvent {
            resource: Some(resource.clone()),
            name: Some(name.clone()),
            namespace: namespace.clone(),
            state: change.clone(),
            ..base("resource")
        },
        Event::Supervisor { host, instance, profile, namespace, state, detail } => StreamEvent {
            host: Some(host.clone()),
            instance: Some(instance.clone()),
            name: profile.clone(),
            namespace: namespace.clone(),
            state: Some(state.clone()),
            detail: detail.clone(),
            ..base("supervisor")
        },
        Event::Heal { id, phase, host, namespace, detail } => StreamEvent {
            heal: Some(*id),
            state: Some(phase.clone()),
            host: host.clone(),
            namespace: namespace.clone(),
            detail: detail.clone(),
            ..base("heal")
        },
        Event::Claimable
        | Event::Credentials
        | Event::Control { .. }
        | Event::ControlReply { .. }
        // Plumbing of the supervisor link: streamed as `supervisor` and `heal` events.
        | Event::SupervisorReport { .. }
        | Event::HealCommand { .. }
        | Event::Other => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_domain::JobState;

    fn job(ns: Option<&str>) -> Event {
        Event::Job { job: JobId::new(), state: Some(JobState::Queued), namespace: ns.map(String::from) }
    }

    fn envelope(events: Vec<Event>) -> Envelope {
        Envelope { origin: ServerId::new(), seq: 1, events }
    }

    #[test]
    fn a_reconnect_within_the_buffer_gets_what_it_missed_once_and_in_order() {
        let feed = Feed::new(ServerId::new());
        feed.heard(&envelope(vec![job(Some("a")), Event::Claimable, job(Some("a"))]));
        let first = feed.connect(None);
        assert_eq!(first.replay.len(), 2, "claim wake-ups are not stream events");
        let last = first.replay[0].id.clone();
        feed.heard(&envelope(vec![job(None), job(Some("b"))]));
        let again = feed.connect(Some(&last));
        assert!(again.resync.is_none());
        let ids: Vec<&str> = again.replay.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, [first.replay[1].id.as_str(), &feed.id(3), &feed.id(4)]);
        assert_eq!(again.position, feed.id(4));
    }

    #[test]
    fn a_gap_a_foreign_id_or_an_id_past_the_buffer_gives_a_resync() {
        let feed = Feed::new(ServerId::new());
        feed.heard(&envelope(vec![job(None)]));
        let before = feed.id(1);
        let other = Feed::new(ServerId::new()).id(1);
        assert_eq!(feed.connect(Some(&other)).resync.unwrap().state.as_deref(), Some("stale_id"));
        assert!(feed.connect(Some("garbage")).resync.is_some());
        let mut live = feed.connect(Some(&before)).live;
        feed.missed();
        assert_eq!(live.try_recv().unwrap().kind, "resync", "connected clients hear of the gap");
        assert_eq!(feed.connect(Some(&before)).resync.unwrap().state.as_deref(), Some("missed"));
        // After the gap, ids from then on replay again.
        feed.heard(&envelope(vec![job(None)]));
        let after = feed.connect(Some(&feed.id(2)));
        assert!(after.resync.is_none());
        assert_eq!(after.replay.len(), 1);
        for _ in 0..REPLAY_CAPACITY {
            feed.heard(&envelope(vec![job(None)]));
        }
        assert!(feed.connect(Some(&feed.id(2))).resync.is_some(), "fell out of the buffer");
    }

    #[test]
    fn namespaces_and_workers_are_filled_in_from_earlier_events() {
        let feed = Feed::new(ServerId::new());
        let id = JobId::new();
        let attempt = |ns: Option<&str>, w: Option<&str>| Event::Attempt {
            job: id,
            step: "s".into(),
            attempt: AttemptId(7),
            status: rota_domain::AttemptStatus::Running,
            namespace: ns.map(String::from),
            worker: w.map(String::from),
        };
        feed.heard(&envelope(vec![attempt(Some("ns1"), Some("w1")), attempt(None, None)]));
        let got = feed.connect(None).replay;
        assert_eq!(got[1].namespace.as_deref(), Some("ns1"));
        assert_eq!(got[1].worker.as_deref(), Some("w1"));
    }
}
