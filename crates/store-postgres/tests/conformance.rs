//! Runs the shared `JobStore` conformance suite against PostgreSQL, durability scenarios
//! included: each scenario gets a database of its own from the test kit, and the harness
//! reconnects to it. Also the migrations: a fresh database migrates, and two stores
//! connecting at once apply each migration once. Skipped without `ROTA_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use rota_store::JobStore;
use rota_store::conformance::Database;
use rota_store_postgres::{PgOptions, PgStore};
use rota_testkit::postgres::TestDb;
use std::sync::Arc;

/// Small pools: parallel tests must never exhaust the server's connections.
fn options() -> PgOptions {
    PgOptions { pool_size: 4, ..PgOptions::default() }
}

/// One scenario's database. Closing and crashing both drop the store: a crash drops the
/// pool without waiting (its connections close; a transaction in flight is rolled back by
/// the server, or was committed whole).
struct PgDb {
    db: TestDb,
}

#[async_trait]
impl Database for PgDb {
    async fn open(&self) -> Arc<dyn JobStore> {
        Arc::new(PgStore::connect(&self.db.url, options()).await.expect("connect the store"))
    }

    async fn close(&self, store: Arc<dyn JobStore>) {
        drop(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    if TestDb::create().await.is_none() {
        return;
    }
    rota_store::conformance::run_all(|| async {
        let db = TestDb::create().await.expect("a test database");
        Arc::new(PgDb { db }) as Arc<dyn Database>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_migrates_once_even_when_two_stores_connect_at_once() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = tokio::join!(PgStore::connect(&db.url, options()), PgStore::connect(&db.url, options()));
    let (a, b) = (a.expect("first store"), b.expect("second store"));
    let version = a.schema_version().await.unwrap();
    assert!(version >= 1, "migrated");
    assert_eq!(b.schema_version().await.unwrap(), version);
    assert_eq!(a.migrate().await.unwrap(), 0, "nothing left to apply");
    // Each migration recorded once: the second store waited for the first one's lock.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // Versions may leave a gap reserved for a migration written alongside: compare with the
    // distinct versions, not the newest.
    let row = client
        .query_one("SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM schema_migrations", &[])
        .await
        .unwrap();
    let (n, distinct, newest): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((n, newest), (distinct, version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_accepted_only_when_compatible() {
    let Some(db) = TestDb::create().await else { return };
    let store = PgStore::connect(&db.url, options()).await.unwrap();
    let known = store.schema_version().await.unwrap();
    drop(store);
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // An additive migration of a newer rota: this build keeps working.
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, min_compatible) VALUES ($1, 'additive', $2)",
            &[&(known + 1), &known],
        )
        .await
        .unwrap();
    PgStore::connect(&db.url, options()).await.expect("an additive newer schema is accepted");
    // One that is not: refused, naming the versions.
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, min_compatible) VALUES ($1, 'breaking', $1)",
            &[&(known + 2)],
        )
        .await
        .unwrap();
    let err = PgStore::connect(&db.url, options()).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {}", known + 2)) && text.contains("upgrade rota"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    // Port 1 on the loopback: nothing listens there.
    let url = "postgres://rota:s3cret-pw@127.0.0.1:1/rota";
    let opts = PgOptions { connect_timeout: std::time::Duration::from_secs(2), ..options() };
    let err = PgStore::connect(url, opts).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}
