//! Opening a [`PgStore`]: the options, the pool (deadpool over tokio-postgres, with TLS as
//! the URL's `sslmode` asks, `tls.rs`), the first connection (an unreachable database is named by host and port,
//! never by its password), the migrations and the clock's offset. Nothing here reads or
//! writes jobs.

use crate::error::{self, PgError};
use crate::quota::LogQuota;
use crate::url::PgUrl;
use crate::{PgStore, clock, schema, submit_group, tls};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;

/// How to connect a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections in the pool at most.
    pub pool_size: usize,
    /// Longest a statement may run (server side); `None`: the server's setting.
    pub statement_timeout: Option<Duration>,
    /// Longest a call waits for a free pooled connection (or to open one) before failing.
    pub pool_timeout: Duration,
    /// Longest opening a connection may take.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            statement_timeout: Some(Duration::from_secs(30)),
            // Well under the clients' 30 s per call: a request that finds the pool busy
            // gets its 503 (and is retried or failed over) before the client gives up.
            pool_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url`, applying the migrations it has not seen (once,
    /// whichever of several servers starting together gets there first). Refuses a schema
    /// newer than this build unless its newest migration is compatible with it.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore, PgError> {
        let url = PgUrl::parse(url).map_err(|e| PgError::Config(e.to_string()))?;
        let tls = tls::connector(url.tls()).map_err(|e| PgError::Config(e.to_string()))?;
        let mut cfg = url.config().clone();
        cfg.connect_timeout(opts.connect_timeout);
        // Every statement is planned for the tables as they are when it runs, not once per
        // connection: the store's statements are prepared (cached per connection), and
        // PostgreSQL keeps a prepared statement's generic plan until the table's statistics
        // change. On a server with autovacuum off they never do, so a plan made while
        // `attempts` was empty (a sequential scan) was kept at 50 000 rows and each
        // completion batch read the whole table; even with autovacuum, a queue's tables
        // swing from empty to a large backlog faster than it analyzes them. The price is a
        // plan per execution, cheap for these single-table, primary-key statements.
        // The URL's own options come after ours, so a `-c plan_cache_mode=..` there wins.
        let mut options = String::from("-c plan_cache_mode=force_custom_plan");
        if let Some(t) = opts.statement_timeout {
            options.push_str(&format!(" -c statement_timeout={}", t.as_millis()));
        }
        if let Some(theirs) = cfg.get_options().filter(|o| !o.trim().is_empty()) {
            options.push(' ');
            options.push_str(theirs);
        }
        cfg.options(options);
        cfg.application_name("rota");
        let target = describe_target(&cfg);
        let manager =
            Manager::from_config(cfg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.pool_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let submits = submit_group::SubmitGroups::new(pool.clone());
        let store = PgStore { pool, quota: LogQuota::new(), clock: clock::Clock::default(), submits };
        // The first connection says whether the database can be reached at all.
        let first = store.pool.get().await.map_err(|e| {
            let detail = match &e {
                // Without deadpool's "Error occurred while creating a new object".
                deadpool_postgres::PoolError::Backend(pg) => error::chain(pg),
                other => other.to_string(),
            };
            PgError::Unreachable { target, detail }
        })?;
        drop(first);
        store.migrate().await?;
        {
            let client = store.pool.get().await?;
            store.clock.measure(&client).await.map_err(backend)?;
        }
        store.refresh_live().await.map_err(|e| PgError::Pool(e.to_string()))?;
        Ok(store)
    }

    /// Applies the migrations the database has not seen. Returns how many this call applied.
    pub async fn migrate(&self) -> Result<usize, PgError> {
        let mut client = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        schema::migrate(client, schema::MIGRATIONS).await.map_err(backend)
    }

    /// The newest schema version applied to the database.
    pub async fn schema_version(&self) -> Result<i64, PgError> {
        let client = self.pool.get().await?;
        schema::current_version(&client).await.map_err(backend)
    }

    /// Closes the pool: pooled connections are closed, calls in flight finish.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// `host:port` of each host a configuration names (sockets by path), for messages: never
/// the user or the password.
fn describe_target(cfg: &tokio_postgres::Config) -> String {
    let ports = cfg.get_ports();
    cfg.get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn backend(e: error::Error) -> PgError {
    match e {
        error::Error::Backend(b) => b,
        error::Error::Store(s) => PgError::Corrupt(s.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rota_testkit::postgres::TestDb;

    #[tokio::test]
    async fn pooled_connections_carry_the_statement_timeout() {
        let Some(db) = TestDb::create().await else { return };
        let opts = PgOptions {
            pool_size: 1,
            statement_timeout: Some(Duration::from_millis(1500)),
            ..PgOptions::default()
        };
        let store = PgStore::connect(&db.url, opts).await.unwrap();
        let client = store.pool.get().await.unwrap();
        let shown: String = client.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
        assert_eq!(shown, "1500ms");
        let shown: String = client.query_one("SHOW plan_cache_mode", &[]).await.unwrap().get(0);
        assert_eq!(shown, "force_custom_plan", "statements are planned for the tables as they are");
        let err = client.query_one("SELECT pg_sleep(3)", &[]).await.expect_err("cancelled by the timeout");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{err}");
    }

    #[tokio::test]
    async fn the_urls_own_options_are_kept_and_win() {
        let Some(db) = TestDb::create().await else { return };
        let sep = if db.url.contains('?') { '&' } else { '?' };
        // `-c plan_cache_mode=auto -c work_mem=5MB`, percent-encoded.
        let url = format!("{}{sep}options=-c%20plan_cache_mode%3Dauto%20-c%20work_mem%3D5MB", db.url);
        let opts = PgOptions {
            pool_size: 1,
            statement_timeout: Some(Duration::from_millis(1500)),
            ..PgOptions::default()
        };
        let store = PgStore::connect(&url, opts).await.unwrap();
        let client = store.pool.get().await.unwrap();
        for (setting, want) in
            [("plan_cache_mode", "auto"), ("work_mem", "5MB"), ("statement_timeout", "1500ms")]
        {
            let shown: String = client.query_one(&format!("SHOW {setting}"), &[]).await.unwrap().get(0);
            assert_eq!(shown, want, "{setting}");
        }
    }
}
