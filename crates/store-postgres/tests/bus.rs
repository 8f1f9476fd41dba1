//! `PgBus` on a real PostgreSQL (one database per test, `ROTA_TEST_POSTGRES_URL`; skipped
//! without it): envelopes reach every server's subscribers (the publisher's own included)
//! in order, the largest allowed payload passes and a bigger one is dropped, and a killed
//! listening session is answered with `Missed`, then delivery resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_store::bus::{Bus, Envelope, Event, MAX_ENVELOPE_BYTES, Received, Subscription};
use rota_store::leader::ServerId;
use rota_store_postgres::bus::PgBus;
use rota_store_postgres::dedicated::{Role, application_name};
use rota_testkit::postgres::TestDb;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

async fn next(sub: &mut Subscription) -> Received {
    tokio::time::timeout(WAIT, sub.recv()).await.expect("nothing received within 10 s")
}

async fn next_envelope(sub: &mut Subscription) -> std::sync::Arc<Envelope> {
    match next(sub).await {
        Received::Envelope(e) => e,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

fn envelope(origin: ServerId, seq: u64) -> Envelope {
    Envelope { origin, seq, events: vec![Event::Claimable, Event::Credentials] }
}

/// An envelope whose JSON is exactly `bytes` long.
fn envelope_of_size(origin: ServerId, seq: u64, bytes: usize) -> Envelope {
    let with = |reply: String| Envelope {
        origin,
        seq,
        events: vec![Event::ControlReply { id: Uuid::nil(), reply }],
    };
    let bare = serde_json::to_string(&with(String::new())).unwrap().len();
    let e = with("x".repeat(bytes - bare));
    assert_eq!(serde_json::to_string(&e).unwrap().len(), bytes);
    e
}

#[tokio::test]
async fn envelopes_from_either_server_reach_both_in_order() {
    let Some(db) = TestDb::create().await else { return };
    let (a_id, b_id) = (ServerId::new(), ServerId::new());
    let a = PgBus::start(&db.url, a_id).await.unwrap();
    let b = PgBus::start(&db.url, b_id).await.unwrap();
    let mut subs = [a.subscribe(), b.subscribe()];
    const N: u64 = 200;
    for seq in 1..=N {
        a.publish(envelope(a_id, seq));
        b.publish(envelope(b_id, seq));
    }
    for sub in &mut subs {
        let (mut from_a, mut from_b) = (0, 0);
        while from_a < N || from_b < N {
            let e = next_envelope(sub).await;
            let last = if e.origin == a_id { &mut from_a } else { &mut from_b };
            assert_eq!(e.seq, *last + 1, "in order, none missing");
            *last = e.seq;
            assert_eq!(e.events, envelope(e.origin, e.seq).events);
        }
    }
}

#[tokio::test]
async fn the_largest_allowed_envelope_passes_and_a_bigger_one_is_dropped() {
    let Some(db) = TestDb::create().await else { return };
    let me = ServerId::new();
    let bus = PgBus::start(&db.url, me).await.unwrap();
    let mut sub = bus.subscribe();
    bus.publish(envelope_of_size(me, 1, MAX_ENVELOPE_BYTES));
    bus.publish(envelope_of_size(me, 2, MAX_ENVELOPE_BYTES + 1));
    bus.publish(envelope(me, 3));
    let largest = next_envelope(&mut sub).await;
    assert_eq!(*largest, envelope_of_size(me, 1, MAX_ENVELOPE_BYTES), "NOTIFY carries the largest allowed");
    assert_eq!(
        next_envelope(&mut sub).await.seq,
        3,
        "the envelope over the limit was dropped, the next one was not"
    );
}

#[tokio::test]
async fn a_killed_listening_session_is_answered_with_missed_then_delivery_resumes() {
    let Some(db) = TestDb::create().await else { return };
    let (a_id, b_id) = (ServerId::new(), ServerId::new());
    let a = PgBus::start(&db.url, a_id).await.unwrap();
    let b = PgBus::start(&db.url, b_id).await.unwrap();
    let (mut on_a, mut on_b) = (a.subscribe(), b.subscribe());
    b.publish(envelope(b_id, 1));
    assert_eq!(next_envelope(&mut on_a).await.seq, 1);
    assert_eq!(next_envelope(&mut on_b).await.seq, 1);

    let (admin, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let killed = Instant::now();
    let n: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name(Role::Bus, a_id)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "a's listening session was found and ended");
    assert!(matches!(next(&mut on_a).await, Received::Missed), "a's subscriber is told it missed envelopes");
    println!("a listened again {:?} after its session was killed", killed.elapsed());

    // Both directions work again, and b never noticed anything.
    b.publish(envelope(b_id, 2));
    a.publish(envelope(a_id, 1));
    for sub in [&mut on_a, &mut on_b] {
        let mut got: Vec<(ServerId, u64)> = Vec::new();
        while got.len() < 2 {
            let e = next_envelope(sub).await;
            got.push((e.origin, e.seq));
        }
        got.sort();
        let mut want = vec![(b_id, 2), (a_id, 1)];
        want.sort();
        assert_eq!(got, want);
    }
}
