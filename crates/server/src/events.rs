//! Publishing on the bus: handlers hand over the events of one write batch, which go out
//! as envelopes stamped with this server's id and the next sequence number, packed so
//! that none exceeds what a transport carries. Publishing is synchronous and cheap (no
//! serialization: events are packed by their size bound) and never fails the request.
//! Must not decide what receivers do: that is `listen.rs`.

use rota_store::bus::{Bus, ENVELOPE_OVERHEAD, Envelope, Event, MAX_ENVELOPE_BYTES};
use rota_store::leader::ServerId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// This server's side of the bus.
pub(crate) struct Publisher {
    origin: ServerId,
    seq: AtomicU64,
    bus: Arc<dyn Bus>,
}

impl Publisher {
    pub(crate) fn new(origin: ServerId, bus: Arc<dyn Bus>) -> Self {
        Self { origin, seq: AtomicU64::new(0), bus }
    }

    pub(crate) fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Publishes the events of one write batch (usually one envelope).
    pub(crate) fn publish(&self, events: Vec<Event>) {
        for events in pack(events, MAX_ENVELOPE_BYTES) {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            self.bus.publish(Envelope { origin: self.origin, seq, events });
        }
    }
}

/// A resource's status (its conditions) was written: what the event stream shows. The
/// schedule controller is woken too (it also looks every tick).
pub(crate) fn status_changed(key: &rota_store::resources::ResourceKey) -> Event {
    Event::Resource {
        resource: key.kind.as_str().to_string(),
        name: key.name.clone(),
        namespace: Some(key.namespace.clone()),
        change: Some("status".into()),
    }
}

/// Splits `events` into runs whose envelopes stay within `limit` bytes. An event larger
/// than the limit on its own travels alone (only a fleet command could be; the transport
/// that cannot carry it drops it, and the requester's retransmission times out).
fn pack(events: Vec<Event>, limit: usize) -> Vec<Vec<Event>> {
    if events.is_empty() {
        return Vec::new();
    }
    let total: usize = events.iter().map(|e| e.size_bound() + 1).sum();
    if ENVELOPE_OVERHEAD + total <= limit {
        return vec![events];
    }
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut size = ENVELOPE_OVERHEAD;
    for e in events {
        let n = e.size_bound() + 1;
        if !run.is_empty() && size + n > limit {
            out.push(std::mem::take(&mut run));
            size = ENVELOPE_OVERHEAD;
        }
        size += n;
        run.push(e);
    }
    out.push(run);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_domain::JobId;
    use rota_store::bus::{InProcessBus, Received};

    #[test]
    fn a_batch_is_one_envelope_unless_it_would_not_fit() {
        let jobs = |n: usize| {
            (0..n).map(|_| Event::Job { job: JobId::new(), state: None, namespace: None }).collect::<Vec<_>>()
        };
        assert_eq!(pack(jobs(3), MAX_ENVELOPE_BYTES).len(), 1);
        assert!(pack(Vec::new(), MAX_ENVELOPE_BYTES).is_empty());
        let many = pack(jobs(1000), MAX_ENVELOPE_BYTES);
        assert!(many.len() > 1);
        assert_eq!(many.iter().map(Vec::len).sum::<usize>(), 1000, "no event lost or repeated");
        for run in &many {
            let envelope = Envelope { origin: ServerId::new(), seq: 1, events: run.clone() };
            let bytes = serde_json::to_vec(&envelope).unwrap().len();
            assert!(bytes < MAX_ENVELOPE_BYTES, "{bytes} bytes");
        }
    }

    #[tokio::test]
    async fn envelopes_carry_the_origin_and_consecutive_numbers() {
        let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
        let mut sub = bus.subscribe();
        let me = ServerId::new();
        let p = Publisher::new(me, bus.clone());
        p.publish(vec![Event::Claimable]);
        p.publish(Vec::new());
        p.publish(vec![Event::Credentials, Event::Claimable]);
        for (seq, n) in [(1, 1), (2, 2)] {
            match sub.recv().await {
                Received::Envelope(e) => assert_eq!((e.origin, e.seq, e.events.len()), (me, seq, n)),
                other => panic!("{other:?}"),
            }
        }
    }
}
