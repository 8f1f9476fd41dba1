//! The PostgreSQL pool flags of `rota server` (issue 12): an exhausted pool answers 503
//! with `Retry-After` within `--db-pool-timeout`, never a hang; the `--db-*` flags are
//! refused with SQLite; `rota server start` saves them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::postgres::TestDb;
use rota_testkit::{Env, rota};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_pool_answers_503_within_the_pool_timeout() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&[
        "--database",
        &db.url,
        "--db-pool-size",
        "1",
        "--db-pool-timeout",
        "2s",
        "--db-statement-timeout",
        "60s",
    ]);
    let token = std::fs::read_to_string(env.data_dir().join("admin.token")).unwrap();
    let http = reqwest::Client::new();
    let list = || {
        http.get(format!("{}/api/v1/jobs", env.url))
            .bearer_auth(token.trim())
            .timeout(Duration::from_secs(90))
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);

    // Another session locks the jobs table: the next listing holds the pool's one
    // connection, blocked on that lock.
    let (admin, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let first = tokio::spawn(list());
    let since = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = 'rota'
                    AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "the first listing never blocked on the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The pool is exhausted: a second request gets 503 with Retry-After, in bounded time.
    let asked = Instant::now();
    let r = list().await.unwrap();
    let took = asked.elapsed();
    eprintln!("an exhausted pool answered {} after {took:?} (--db-pool-timeout 2s)", r.status());
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(took < Duration::from_secs(30), "503 took {took:?}: a hang, not the pool timeout");

    // The lock released, the first request completes and the server serves again.
    admin.batch_execute("ROLLBACK").await.unwrap();
    let r = first.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the blocked listing completes once the lock is gone");
    assert_eq!(list().await.unwrap().status(), 200);
}

#[test]
fn db_flags_are_refused_with_sqlite() {
    let env = Env::new();
    for (flag, value) in
        [("--db-pool-size", "4"), ("--db-statement-timeout", "5s"), ("--db-pool-timeout", "1s")]
    {
        let out = rota(&env).args(["server", "--listen", "127.0.0.1:0", flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(&format!("{flag}: applies to a PostgreSQL database")), "{stderr}");
        assert!(stderr.contains("SQLite file"), "{stderr}");
    }
    let out = rota(&env).args(["server", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--db-pool-size", "--db-statement-timeout", "--db-pool-timeout"] {
        assert!(help.contains(flag), "{flag} missing from --help: {help}");
    }
}
