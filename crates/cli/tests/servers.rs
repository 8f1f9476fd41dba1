//! Several `rota server` processes on one PostgreSQL database form one control plane
//! (issue 12, acceptance 3 and 4, first part): a submit through A runs on a worker of B,
//! `worker ping` through A answers for that worker, `job logs` through B reads what it
//! wrote, and when A (the leader) is killed, B takes over leadership.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::postgres::TestDb;
use rota_testkit::{Env, bound, rota, server, spawn_worker, submit, wait_for_end};
use std::time::{Duration, Instant};

/// A second server in `env`'s tree (same token files), on the same database.
fn second_server(env: &Env, database: &str) -> server::Server {
    server::start_beside(env, database)
}

/// Whether the server at `url` says it leads (`GET /healthz/detail`); `None` if it cannot say.
async fn leads(env: &Env, url: &str) -> Option<bool> {
    let token = std::fs::read_to_string(env.data_dir().join("admin.token")).ok()?;
    let client = rota_client::Client::new(url, Some(token.trim().to_string())).ok()?;
    let detail = tokio::time::timeout(Duration::from_secs(5), client.healthz_detail()).await.ok()?.ok()?;
    Some(detail.leads)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_database_are_one_control_plane() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    let a = env.url.clone();
    let b = second_server(&env, &db.url);

    // A worker long-polling B; a submit through A runs on it.
    let _w = spawn_worker(&env, "wb", &["--server", &b.url]);
    let id = submit(&env, &["--", "sh", "-c", "echo ran-on-b"]);
    let end = wait_for_end(&env, &id);
    assert_eq!(end["state"], "succeeded", "{end}");

    // Fleet control through A reaches the worker on B.
    let out = rota(&env).args(["--server", &a, "worker", "ping"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("wb"),
        "ping through A: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Logs through B of a job submitted through A.
    let out = rota(&env).args(["--server", &b.url, "job", "logs", &id]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ran-on-b"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A started first and leads; killed, B takes over.
    assert_eq!(leads(&env, &a).await, Some(true), "the first server leads");
    assert_eq!(leads(&env, &b.url).await, Some(false));
    env.kill_server();
    let killed = Instant::now();
    while leads(&env, &b.url).await != Some(true) {
        assert!(killed.elapsed() < Duration::from_secs(30).max(bound()), "B never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("B leads {:?} after A was killed", killed.elapsed());

    // And the control plane keeps working through B alone.
    let id = submit(&env, &["--server", &b.url, "--", "true"]);
    let out = rota(&env).args(["--server", &b.url, "job", "show", &id, "--json"]).output().unwrap();
    assert!(out.status.success());
    drop(b);
}

/// While the database refuses connections (a restart, as far as the server can tell), a
/// request gets 503 with `Retry-After` in bounded time, never a hang; once it is back, the
/// server serves again on fresh connections.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_goes_away_gives_503_then_the_server_carries_on() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    let token = std::fs::read_to_string(env.data_dir().join("admin.token")).unwrap();
    let http = reqwest::Client::new();
    let list = || {
        http.get(format!("{}/api/v1/jobs", env.url))
            .bearer_auth(token.trim())
            .timeout(Duration::from_secs(60))
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);

    let admin = tokio_postgres_admin(&db).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name()
        ))
        .await
        .unwrap();
    let asked = Instant::now();
    let r = list().await.unwrap();
    eprintln!("answered {} after {:?} while the database refused connections", r.status(), asked.elapsed());
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()), Some("1".into()));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    admin.batch_execute(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", db.name())).await.unwrap();
    let back = Instant::now();
    loop {
        if list().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(30), "the server never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("serving again {:?} after the database came back", back.elapsed());
}

/// A connection to the test server's maintenance database (the one the URL names).
async fn tokio_postgres_admin(_db: &TestDb) -> tokio_postgres::Client {
    let url = std::env::var(rota_testkit::postgres::URL_ENV).unwrap();
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}
