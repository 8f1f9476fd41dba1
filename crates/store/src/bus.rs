//! The bus: how the servers of one control plane tell each other (and themselves) that
//! something changed. Claim wake-ups, submits, fleet-control messages and their replies,
//! log progress, credential-cache invalidation and state changes all travel as typed
//! [`Event`]s in [`Envelope`]s stamped with their origin server and a per-origin sequence
//! number, so a receiver can tell when it missed one.
//!
//! Correctness never rides on a message: every waiter also re-checks the store on a bounded
//! timer, so a lost message costs latency, never a job. Envelopes stay small (the
//! PostgreSQL transport carries under [`MAX_ENVELOPE_BYTES`] per message): the publisher
//! packs events by [`Event::size_bound`]. This module owns the types and the in-process
//! transport; it must not decide what a receiver does with an event.

use crate::leader::ServerId;
use rota_domain::{AttemptId, AttemptStatus, JobId, JobState, SessionId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Largest encoded envelope a transport must carry (PostgreSQL `NOTIFY` takes < 8000 bytes).
pub const MAX_ENVELOPE_BYTES: usize = 7_900;

/// Bytes an envelope takes besides its events (origin, sequence number, brackets).
pub const ENVELOPE_OVERHEAD: usize = 96;

/// One change, as small as it can be: ids and states, never documents or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// Steps may have become claimable (a submit, a completion, a retry, a lost attempt,
    /// a resumed queue): claim long-polls look again.
    Claimable,
    /// A job was created or its state (or one of its steps' states) changed.
    Job {
        /// The job.
        job: JobId,
        /// Its state after the change, when the writer knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<JobState>,
        /// Its namespace, when the publisher knows it (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// An attempt (of `step`) changed: claimed, ended, stopped.
    Attempt {
        /// Its job.
        job: JobId,
        /// Its step's name (at most `limits::MAX_NAME` bytes).
        step: String,
        /// The attempt.
        attempt: AttemptId,
        /// Its status after the change.
        status: AttemptStatus,
        /// Its job's namespace, when the publisher knows it (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// The name of the worker holding it, when the publisher knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// Output of a job was stored (a marker: never the bytes).
    Logs {
        /// The job.
        job: JobId,
        /// Its namespace, when the publisher knows it (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// A worker session registered, changed or ended; an ended one's credential is void.
    Worker {
        /// The session.
        session: SessionId,
        /// The session ended (superseded, unregistered): forget its cached credential.
        ended: bool,
        /// Its namespace, when the publisher knows it (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Its name, when the publisher knows it (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A declared resource changed: applied, deleted, or its status (conditions) written.
    Resource {
        /// Its kind, e.g. `WorkerPool`.
        resource: String,
        /// Its name.
        name: String,
        /// Its namespace (absent from older servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// What happened (`applied`, `deleted`, `status`), when the publisher says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<String>,
    },
    /// A background worker's supervisor reported its local state (reserved for the
    /// supervisor link: running, restarting, failed, stopped). Receivers only stream it.
    Supervisor {
        /// The host it runs on.
        host: String,
        /// Its worker's instance id.
        instance: String,
        /// Its worker's profile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Its worker's namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// The state reported.
        state: String,
        /// The last error, shortened by the publisher.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Progress of a fleet-wide heal (reserved for heal: `starting`, `healed`, `failed`,
    /// `done`). Receivers only stream it.
    Heal {
        /// The heal operation.
        id: Uuid,
        /// The phase.
        phase: String,
        /// The host it concerns (none for `done`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The namespace of the worker it concerns (of the call, for `done`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// What happened, shortened by the publisher.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The admin or join token was rotated: cached hashes must be read again.
    Credentials,
    /// A fleet-control command for the worker session's mailbox, wherever it long-polls.
    Control {
        /// The session it is for.
        session: SessionId,
        /// The command's id (replies and retransmissions carry it).
        id: Uuid,
        /// The command, as the worker protocol's JSON.
        command: String,
    },
    /// A worker's reply to a [`Event::Control`] command, for whoever waits on `id`.
    ControlReply {
        /// The command's id.
        id: Uuid,
        /// The reply, as the worker protocol's JSON.
        reply: String,
    },
    /// A supervisor's report of its local state (the supervisor link), as the API's JSON:
    /// every server keeps the latest per host and key.
    SupervisorReport {
        /// The report (its error text bounded, so the envelope stays small).
        report: String,
    },
    /// A heal for the supervisor of `host`/`key`, for whichever server it links to.
    HealCommand {
        /// The supervisor's host.
        host: String,
        /// Its instance key.
        key: String,
        /// The heal's id.
        id: Uuid,
    },
    /// A kind a newer server publishes that this one does not know: ignored, so envelopes
    /// from servers of different versions still decode (their other events count).
    #[serde(other)]
    Other,
}

/// Fixed part of any event's JSON: the `kind` tag, braces, field names, an id.
const EVENT_FIXED: usize = 128;

impl Event {
    /// An upper bound of this event's encoded size, cheap to compute (no serialization):
    /// what the publisher packs envelopes by. A test checks it against the JSON.
    pub fn size_bound(&self) -> usize {
        // Strings are escaped in JSON: a control character takes 6 bytes.
        let text = |s: &str| s.len() * 6;
        // An optional field adds its name and quotes besides its text.
        let opt = |s: &Option<String>| s.as_deref().map_or(0, |s| 24 + text(s));
        EVENT_FIXED
            + match self {
                Event::Job { namespace, .. } | Event::Logs { namespace, .. } => opt(namespace),
                Event::Attempt { step, namespace, worker, .. } => text(step) + opt(namespace) + opt(worker),
                Event::Worker { namespace, name, .. } => opt(namespace) + opt(name),
                Event::Resource { resource, name, namespace, change } => {
                    text(resource) + text(name) + opt(namespace) + opt(change)
                }
                Event::Supervisor { host, instance, profile, namespace, state, detail } => {
                    text(host) + text(instance) + opt(profile) + opt(namespace) + text(state) + opt(detail)
                }
                Event::Heal { phase, host, namespace, detail, .. } => {
                    64 + text(phase) + opt(host) + opt(namespace) + opt(detail)
                }
                Event::Control { command, .. } => text(command),
                Event::ControlReply { reply, .. } => text(reply),
                Event::SupervisorReport { report } => text(report),
                Event::HealCommand { host, key, .. } => text(host) + text(key),
                _ => 0,
            }
    }
}

/// What a transport carries: one server's events of one write batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The server that published it.
    pub origin: ServerId,
    /// 1, 2, 3, … per origin: a gap means envelopes were missed.
    pub seq: u64,
    /// The events, in the order they happened.
    pub events: Vec<Event>,
}

/// What a subscriber reads.
#[derive(Debug)]
pub enum Received {
    /// The next envelope.
    Envelope(Arc<Envelope>),
    /// The subscriber fell behind (or the transport lost its connection) and missed some:
    /// it must act as if anything could have changed.
    Missed,
    /// The bus is gone.
    Closed,
}

/// What a transport built on a broadcast channel sends its subscribers.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// An envelope.
    Envelope(Arc<Envelope>),
    /// The transport itself lost envelopes (its connection dropped): every subscriber must
    /// act as if anything could have changed.
    Missed,
}

/// A subscription to every envelope published on the bus, its own server's included.
pub struct Subscription {
    rx: broadcast::Receiver<Delivery>,
}

impl Subscription {
    /// Wraps a broadcast receiver (for transports built on one).
    pub fn new(rx: broadcast::Receiver<Delivery>) -> Self {
        Self { rx }
    }

    /// The next envelope, or word that some were missed.
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(Delivery::Envelope(e)) => Received::Envelope(e),
            Ok(Delivery::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => Received::Missed,
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

/// The transport between the servers of one control plane. Publishing never blocks and
/// never fails the caller: a message that cannot be sent is lost, which costs latency only.
pub trait Bus: Send + Sync + 'static {
    /// Sends an envelope to every subscriber, this server's own included.
    fn publish(&self, envelope: Envelope);
    /// Every envelope published from now on.
    fn subscribe(&self) -> Subscription;
}

/// The bus of one server process (SQLite, `rota dev`): a broadcast channel.
pub struct InProcessBus {
    tx: broadcast::Sender<Delivery>,
}

/// Envelopes a slow subscriber may fall behind by before it is told it missed some.
const IN_PROCESS_BACKLOG: usize = 4096;

impl Default for InProcessBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(IN_PROCESS_BACKLOG).0 }
    }
}

impl Bus for InProcessBus {
    fn publish(&self, envelope: Envelope) {
        // No subscriber yet is not an error: nobody waits.
        let _ = self.tx.send(Delivery::Envelope(Arc::new(envelope)));
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

/// A bus that loses every `n`th envelope, for tests that prove the timers carry
/// correctness. Never in a release binary.
#[cfg(feature = "test-bus")]
pub struct DropEvery {
    inner: InProcessBus,
    n: u64,
    sent: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "test-bus")]
impl DropEvery {
    /// Loses the `n`th, `2n`th, … envelope (`n` ≥ 2; 2 drops every other one).
    pub fn new(n: u64) -> Self {
        Self { inner: InProcessBus::default(), n: n.max(2), sent: std::sync::atomic::AtomicU64::new(0) }
    }
}

#[cfg(feature = "test-bus")]
impl Bus for DropEvery {
    fn publish(&self, envelope: Envelope) {
        let k = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if !k.is_multiple_of(self.n) {
            self.inner.publish(envelope);
        }
    }

    fn subscribe(&self) -> Subscription {
        self.inner.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn worst_case_events() -> Vec<Event> {
        let name = "\u{1}".repeat(rota_domain::limits::MAX_NAME);
        vec![
            Event::Claimable,
            Event::Job { job: JobId::new(), state: Some(JobState::Succeeded), namespace: Some(name.clone()) },
            Event::Job { job: JobId::new(), state: None, namespace: None },
            Event::Attempt {
                job: JobId::new(),
                step: name.clone(),
                attempt: AttemptId(i64::MAX),
                status: AttemptStatus::Running,
                namespace: Some(name.clone()),
                worker: Some(name.clone()),
            },
            Event::Logs { job: JobId::new(), namespace: Some(name.clone()) },
            Event::Worker {
                session: SessionId::new(),
                ended: true,
                namespace: Some(name.clone()),
                name: Some(name.clone()),
            },
            Event::Resource {
                resource: name.clone(),
                name: name.clone(),
                namespace: Some(name.clone()),
                change: Some(name.clone()),
            },
            Event::Supervisor {
                host: name.clone(),
                instance: name.clone(),
                profile: Some(name.clone()),
                namespace: Some(name.clone()),
                state: name.clone(),
                detail: Some(name.clone()),
            },
            Event::Heal {
                id: Uuid::now_v7(),
                phase: name.clone(),
                host: Some(name.clone()),
                namespace: Some(name.clone()),
                detail: Some(name.clone()),
            },
            Event::Credentials,
            Event::Control { session: SessionId::new(), id: Uuid::now_v7(), command: name.clone() },
            Event::SupervisorReport { report: name.clone() },
            Event::HealCommand { host: name.clone(), key: name.clone(), id: Uuid::now_v7() },
            Event::ControlReply { id: Uuid::now_v7(), reply: name },
        ]
    }

    #[test]
    fn the_size_bound_holds_for_the_largest_event_of_each_kind_and_envelopes_round_trip() {
        for e in worst_case_events() {
            let json = serde_json::to_vec(&e).unwrap();
            assert!(json.len() <= e.size_bound(), "{e:?}: {} > bound {}", json.len(), e.size_bound());
        }
        let envelope = Envelope { origin: ServerId::new(), seq: u64::MAX, events: worst_case_events() };
        let json = serde_json::to_vec(&envelope).unwrap();
        let bound: usize =
            ENVELOPE_OVERHEAD + envelope.events.iter().map(|e| e.size_bound() + 1).sum::<usize>();
        assert!(json.len() <= bound, "{} > {bound}", json.len());
        let back: Envelope = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn messages_of_older_and_newer_servers_decode() {
        // An older server's events (no namespace, no names) still decode here.
        let old = r#"{"origin":"0196a1b2-0000-7000-8000-000000000001","seq":3,"events":[
            {"kind":"job","job":"0196a1b2-0000-7000-8000-000000000002","state":"queued"},
            {"kind":"resource","resource":"Schedule","name":"nightly"},
            {"kind":"worker","session":"0196a1b2-0000-7000-8000-000000000003","ended":true}]}"#;
        let e: Envelope = serde_json::from_str(old).unwrap();
        assert!(matches!(&e.events[1], Event::Resource { namespace: None, change: None, .. }));
        // A newer server's unknown kind is skipped, the rest of its envelope kept.
        let new = r#"{"origin":"0196a1b2-0000-7000-8000-000000000001","seq":4,"events":[
            {"kind":"somethingNew","x":1},{"kind":"claimable"}]}"#;
        let e: Envelope = serde_json::from_str(new).unwrap();
        assert_eq!(e.events, vec![Event::Other, Event::Claimable]);
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_envelope_and_a_slow_one_is_told_it_missed_some() {
        let bus = InProcessBus::default();
        let mut fast = bus.subscribe();
        let mut slow = bus.subscribe();
        let origin = ServerId::new();
        for seq in 1..=(IN_PROCESS_BACKLOG as u64 + 10) {
            bus.publish(Envelope { origin, seq, events: vec![Event::Claimable] });
            if let Received::Envelope(e) = fast.recv().await {
                assert_eq!(e.seq, seq);
            } else {
                panic!("the fast subscriber missed {seq}");
            }
        }
        assert!(matches!(slow.recv().await, Received::Missed), "the slow one is told it fell behind");
    }
}
