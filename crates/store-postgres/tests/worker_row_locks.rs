//! The locks on a worker's row, seen from a second connection that holds them the way a
//! claim or a heartbeat in flight does. A heartbeat must never wait for claims (under a
//! stream of overlapping claims it starved until the session's leases ran out), a claim
//! must never wait for a heartbeat, and ending a session must still wait for a claim in
//! flight, so the claim's attempts are lost with the session rather than left running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use rota_domain::{JobId, JobSpec, SessionId, StepSpec};
use rota_store::conformance::{WorkerSpec, registration};
use rota_store::{Heartbeat, JobStore, NewJob};
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);
/// Far longer than any of these calls takes when it does not wait.
const BOUND: Duration = Duration::from_secs(10);

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
}

/// A store on a fresh database with one registered worker (`None` without PostgreSQL, which
/// `TestDb::create` turns into a failure under `ROTA_REQUIRE_ALL`).
async fn store_with_worker() -> Option<(TestDb, PgStore, SessionId)> {
    let db = TestDb::create().await?;
    let store = PgStore::connect(&db.url, PgOptions { pool_size: 4, ..PgOptions::default() }).await.unwrap();
    let reg = registration(&WorkerSpec { name: "w", ..WorkerSpec::default() });
    let session = reg.session;
    store.register_worker(reg, t(0)).await.unwrap();
    Some((db, store, session))
}

/// A second connection holding `lock` on the session's worker row in an open transaction.
async fn hold(db: &TestDb, session: SessionId, lock: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN").await.unwrap();
    let sql = format!("SELECT 1 FROM workers WHERE session = $1 {lock}");
    assert_eq!(client.query(&sql, &[&session.0]).await.unwrap().len(), 1);
    client
}

async fn submit(store: &PgStore) {
    let spec = JobSpec::new(vec![StepSpec::new("main", "true")]);
    store.submit_jobs(vec![NewJob { id: JobId::new(), spec, now: t(0) }]).await.unwrap()[0].as_ref().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_does_not_wait_for_a_claim_in_flight() {
    let Some((db, store, session)) = store_with_worker().await else { return };
    submit(&store).await;
    let claimed = store.claim(session, 1, t(1), TTL).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // What a claim (and a completion that claims) holds on the row until it commits.
    let claim = hold(&db, session, "FOR KEY SHARE").await;
    let started = Instant::now();
    let hb = Heartbeat { session, attempts: vec![claimed[0].attempt_id], draining: false, concurrency: None };
    let out = tokio::time::timeout(BOUND, store.heartbeat(hb, t(2), TTL))
        .await
        .expect("the heartbeat waited for the claim's lock on the worker row")
        .unwrap();
    eprintln!("heartbeat beside a claim in flight took {:?}", started.elapsed());
    assert_eq!(out.renewed, vec![claimed[0].attempt_id]);
    claim.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_does_not_wait_for_a_heartbeat_in_flight() {
    let Some((db, store, session)) = store_with_worker().await else { return };
    submit(&store).await;
    // What a heartbeat's `UPDATE workers` holds until it commits.
    let heartbeat = hold(&db, session, "FOR NO KEY UPDATE").await;
    let started = Instant::now();
    let claimed = tokio::time::timeout(BOUND, store.claim(session, 1, t(1), TTL))
        .await
        .expect("the claim waited for the heartbeat's lock on the worker row")
        .unwrap();
    eprintln!("claim beside a heartbeat in flight took {:?}", started.elapsed());
    assert_eq!(claimed.len(), 1);
    heartbeat.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_waits_for_a_claim_in_flight() {
    let Some((db, store, session)) = store_with_worker().await else { return };
    let claim = hold(&db, session, "FOR KEY SHARE").await;
    let store = std::sync::Arc::new(store);
    let s2 = store.clone();
    let unregister = tokio::spawn(async move { s2.unregister_worker(session, t(2)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!unregister.is_finished(), "the session ended while a claim for it was in flight");
    claim.batch_execute("COMMIT").await.unwrap();
    let lost =
        tokio::time::timeout(BOUND, unregister).await.expect("unregister never finished").unwrap().unwrap();
    assert!(lost.is_empty(), "{lost:?}");
    let workers = store.list_workers().await.unwrap();
    let w = workers.iter().find(|w| w.session == session).expect("the session's record");
    assert_eq!(w.status, rota_store::SessionStatus::Offline);
}
