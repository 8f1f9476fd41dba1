//! `PgLeader` on a real PostgreSQL (one database per test, `ROTA_TEST_POSTGRES_URL`; skipped
//! without it): exactly one of two servers leads, `leader()` names it, `others_serving`
//! sees the other, and the other takes over within a bound after a resign or after the
//! leader's session is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_store::leader::{Leadership, ServerId, ServerInfo};
use rota_store_postgres::dedicated::{Role, application_name};
use rota_store_postgres::leader::PgLeader;
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::time::{Duration, Instant};

fn server(host: &str) -> ServerInfo {
    ServerInfo {
        id: ServerId::new(),
        host: host.into(),
        pid: std::process::id(),
        started_at: chrono::Utc::now(),
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A test database migrated as a server's store leaves it (the `servers` table included).
async fn migrated() -> Option<TestDb> {
    let db = TestDb::create().await?;
    let store = PgStore::connect(&db.url, PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
    store.close();
    Some(db)
}

/// Polls `who.lead()` every 50 ms until it answers `want`, up to `bound`; the time it took.
async fn until_leads(who: &PgLeader, want: bool, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if who.lead().await.unwrap_or(false) == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "lead() did not become {want} within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exactly_one_of_two_leads_it_is_named_and_the_other_takes_over_after_a_resign() {
    let Some(db) = migrated().await else { return };
    let (a_me, b_me) = (server("host-a"), server("host-b"));
    let a = PgLeader::start(&db.url, a_me.clone()).await.unwrap();
    let b = PgLeader::start(&db.url, b_me.clone()).await.unwrap();
    assert_eq!(a.leader().await.unwrap(), None, "nobody leads before anyone asked to");
    // Started together (a whole control plane after an outage): neither was serving before.
    assert!(!a.others_serving().await.unwrap() && !b.others_serving().await.unwrap(), "started together");
    // One started well after them sees them serving.
    let later =
        ServerInfo { started_at: chrono::Utc::now() + chrono::Duration::seconds(60), ..server("host-c") };
    let c = PgLeader::start(&db.url, later).await.unwrap();
    assert!(c.others_serving().await.unwrap(), "a later server sees the others serving");
    c.resign().await.unwrap();

    // Over more than one re-check period the answers stay: exactly one leads.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut first = None;
    while Instant::now() < deadline {
        let (la, lb) = (a.lead().await.unwrap(), b.lead().await.unwrap());
        assert!(la ^ lb, "exactly one leads (a: {la}, b: {lb})");
        assert_eq!(*first.get_or_insert(la), la, "leadership did not move by itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader, follower, leader_me, follower_me) =
        if first == Some(true) { (&a, &b, &a_me, &b_me) } else { (&b, &a, &b_me, &a_me) };
    for asker in [&a, &b] {
        let named = asker.leader().await.unwrap().expect("someone leads");
        assert_eq!((named.id, &named.host, named.pid), (leader_me.id, &leader_me.host, leader_me.pid));
    }

    leader.resign().await.unwrap();
    assert!(!leader.lead().await.unwrap(), "a resigned server does not lead again");
    let took = until_leads(follower, true, Duration::from_secs(5)).await;
    println!("the follower took over {took:?} after the leader resigned");
    assert_eq!(follower.leader().await.unwrap().map(|s| s.id), Some(follower_me.id));
    assert!(!follower.others_serving().await.unwrap(), "the resigned server's row is gone");
}

#[tokio::test]
async fn a_leader_whose_session_is_killed_stops_leading_at_once_and_the_other_takes_over() {
    let Some(db) = migrated().await else { return };
    let (a_me, b_me) = (server("host-a"), server("host-b"));
    let a = PgLeader::start(&db.url, a_me.clone()).await.unwrap();
    until_leads(&a, true, Duration::from_secs(5)).await;
    let b = PgLeader::start(&db.url, b_me.clone()).await.unwrap();
    assert!(!b.lead().await.unwrap());

    let killed: i64 = admin(&db.url)
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name(Role::Leader, a_me.id)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the leader's session was found and ended");
    // Well inside one re-check period: noticed from the closed connection, not a timer.
    let lost = until_leads(&a, false, Duration::from_secs(1)).await;
    println!("the killed leader stopped leading after {lost:?}");
    let took = until_leads(&b, true, Duration::from_secs(5)).await;
    println!("the other server took over {took:?} after that");
    assert!(!a.lead().await.unwrap(), "the old leader reconnected and follows");
    // Its own session may still be waiting out its reconnect delay: ask until it answers.
    let asked = std::time::Instant::now();
    let named = loop {
        match a.leader().await {
            Ok(l) => break l,
            Err(e) => {
                assert!(asked.elapsed() < Duration::from_secs(30), "the old leader never reconnected: {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(named.map(|s| s.id), Some(b_me.id), "the old leader names the new one");
}

#[tokio::test]
async fn an_unreachable_database_is_named_by_host_and_port_never_by_password() {
    let me = server("host-a");
    let Err(e) = PgLeader::start("postgres://rota:s3cret@127.0.0.1:1/rota", me).await else {
        panic!("nothing listens on port 1")
    };
    let text = format!("{e} / {e:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
