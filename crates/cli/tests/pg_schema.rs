//! A rolling upgrade on PostgreSQL (issue 12), end to end through the `rota server` binary:
//! against a schema one version newer whose migration is additive (a column and a table
//! this build does not know) an older server starts and runs a job; against one that is
//! not compatible it refuses to start (exit 78, never restarted by a supervisor), naming
//! both versions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::postgres::TestDb;
use rota_testkit::{Env, rota, spawn_worker, submit, wait_for_end};

#[tokio::test(flavor = "multi_thread")]
async fn an_older_server_runs_on_an_additive_newer_schema_and_refuses_an_incompatible_one() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    env.stop_server();

    let (admin, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let known: i64 = admin.query_one("SELECT max(version) FROM schema_migrations", &[]).await.unwrap().get(0);
    // What a newer rota's additive migration could do: a column and a table older code ignores.
    admin
        .batch_execute(&format!(
            "BEGIN;
             ALTER TABLE jobs ADD COLUMN newer_note text;
             CREATE TABLE newer_things (id bigint PRIMARY KEY);
             INSERT INTO schema_migrations (version, name, min_compatible)
                  VALUES ({}, 'additive', {known});
             COMMIT;",
            known + 1
        ))
        .await
        .unwrap();
    env.start_server(&["--database", &db.url]);
    let _w = spawn_worker(&env, "w1", &[]);
    let id = submit(&env, &["--", "sh", "-c", "echo on-a-newer-schema"]);
    let end = wait_for_end(&env, &id);
    assert_eq!(end["state"], "succeeded", "{end}");
    env.stop_server();

    // A newer migration that older code cannot work with.
    let newest = known + 2;
    admin
        .execute(
            "INSERT INTO schema_migrations (version, name, min_compatible) VALUES ($1, 'breaking', $1)",
            &[&newest],
        )
        .await
        .unwrap();
    let out = rota(&env).args(["server", "--listen", "127.0.0.1:0", "--database", &db.url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("refused: {}", stderr.trim());
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&format!("schema version {newest}")), "{stderr}");
    assert!(stderr.contains(&format!("only knows up to version {known}")), "{stderr}");
    assert!(stderr.contains("upgrade rota"), "{stderr}");
}
