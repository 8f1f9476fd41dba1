//! A PostgreSQL database of its own for each test, on the server `ROTA_TEST_POSTGRES_URL`
//! names (`.ci/run` sets it): created empty by [`TestDb::create`], dropped when the
//! [`TestDb`] is, so parallel tests never share tables, advisory locks or notifications.
//! Databases left by killed test processes (their names carry the creator's pid) are
//! dropped by the first test of a later run. Without the variable the test is skipped, or
//! fails under `ROTA_REQUIRE_ALL=1` (`require.rs`).

use crate::procs::pid_alive;
use crate::require::require;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// The variable naming the test server (a URL to an existing database, e.g. `test`).
pub const URL_ENV: &str = "ROTA_TEST_POSTGRES_URL";

/// Every database this kit creates starts with this.
const PREFIX: &str = "rota_t_";

/// One test's database; dropped (forcibly: open connections are ended) with this value.
pub struct TestDb {
    /// Its URL, for the code under test.
    pub url: String,
    name: String,
    server_url: String,
}

impl TestDb {
    /// A fresh, empty database; `None` when the test must be skipped (no server named).
    pub async fn create() -> Option<Self> {
        let server_url = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty());
        if !require(
            server_url.is_some(),
            "PostgreSQL",
            &format!("set {URL_ENV}=postgres://USER@HOST:PORT/DB"),
        ) {
            return None;
        }
        let server_url = server_url?;
        static SWEPT: OnceCell<()> = OnceCell::const_new();
        SWEPT.get_or_init(|| drop_leftovers(&server_url)).await;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}_{}_{:04x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let admin = connect(&server_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        Some(Self { url: with_database(&server_url, &name), name, server_url })
    }

    /// [`TestDb::create`] for code without a runtime (or on one it must not block): on a
    /// thread of its own.
    pub fn create_blocking() -> Option<Self> {
        let made = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("a runtime to create the test database: {e}"));
            rt.block_on(Self::create())
        });
        made.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let admin = connect(&server_url).await;
                    if let Err(e) =
                        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
                    {
                        eprintln!("warning: could not drop the test database {name}: {e}");
                    }
                });
            }
        });
        let _ = done.join();
    }
}

/// Drops the databases of test processes that are gone (killed before their drop ran).
async fn drop_leftovers(server_url: &str) {
    let admin = connect(server_url).await;
    let rows = admin
        .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&PREFIX])
        .await
        .unwrap_or_default();
    for row in rows {
        let name: String = row.get(0);
        let pid =
            name.strip_prefix(PREFIX).and_then(|r| r.split('_').next()).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {URL_ENV}: {e}"));
    tokio::spawn(conn);
    client
}

/// `url` with its database (the path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_options_kept() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[tokio::test]
    async fn a_test_database_is_empty_and_gone_after_drop() {
        let Some(db) = TestDb::create().await else { return };
        let c = connect(&db.url).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0);
        let (name, server) = (db.name().to_string(), db.server_url.clone());
        drop(c);
        drop(db);
        let admin = connect(&server).await;
        let left: i64 = admin
            .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
            .await
            .expect("q")
            .get(0);
        assert_eq!(left, 0, "{name} was dropped");
    }
}
