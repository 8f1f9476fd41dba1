//! Migration 5 (namespaces, issue 15) on a database the previous release wrote: the fixture
//! is a `pg_dump --inserts` of the database `rota` at c3fd497 left after a session of real
//! use (`scripts/write-store-fixture`). Opened by this build, everything is in `default`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_store::JobStore;
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_database_of_the_previous_release_opens_with_everything_in_default() {
    let Some(db) = TestDb::create().await else { return };
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(include_str!("fixtures/before-namespaces.sql")).await.unwrap();
    let before: i64 =
        client.query_one("SELECT max(version) FROM public.schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(before, 4, "the fixture is at the schema before namespaces");
    let store: Arc<dyn JobStore> = Arc::new(PgStore::connect(&db.url, PgOptions::default()).await.unwrap());
    rota_store::conformance::before_namespaces_in_default(store.clone()).await;
    // Migration 12 (SQLite) / 7 (PostgreSQL), issue 18: grace rotations and forgotten workers.
    rota_store::conformance::previous_release_rotates_and_forgets(store).await;
    let applied: i64 = client
        .query_one(
            "SELECT count(*) FROM public.schema_migrations WHERE version = 5 AND name = 'namespaces'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1, "migration 5 ran");
}
