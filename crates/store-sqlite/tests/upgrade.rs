//! Migration 10 (namespaces, issue 15) on a store the previous release wrote: the fixture
//! is a `.dump` of the SQLite files `rota` at c3fd497 left after a session of real use
//! (`scripts/write-store-fixture`). Opened by this build, everything is in `default`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_store::JobStore;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_store_of_the_previous_release_opens_with_everything_in_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rota.db");
    for (file, dump) in [
        (path.clone(), include_str!("fixtures/before-namespaces/main.sql")),
        (dir.path().join("rota.db.logs"), include_str!("fixtures/before-namespaces/logs.sql")),
    ] {
        rusqlite::Connection::open(&file).unwrap().execute_batch(dump).unwrap();
    }
    let store: Arc<dyn JobStore> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    rota_store::conformance::before_namespaces_in_default(store.clone()).await;
    // Migration 12 (SQLite) / 7 (PostgreSQL), issue 18: grace rotations and forgotten workers.
    rota_store::conformance::previous_release_rotates_and_forgets(store).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let applied: i64 = conn
        .query_row(
            "SELECT count(*) FROM schema_migrations WHERE version = 10 AND name = 'namespaces'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(applied, 1, "migration 10 ran");
    let broken: i64 =
        conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(broken, 0, "steps and attempts still point at their jobs");
    let steps: i64 = conn
        .query_row("SELECT count(*) FROM steps JOIN jobs ON jobs.id = steps.job_id", [], |r| r.get(0))
        .unwrap();
    assert!(steps >= 4, "the steps kept their jobs: {steps}");
}
