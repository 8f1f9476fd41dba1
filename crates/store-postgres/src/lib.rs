//! `JobStore` on PostgreSQL: the store of a control plane of several servers (issue 12).
//! Under construction: this crate holds what exists so far and is not yet used by the
//! server; `crates/store-sqlite` remains the backend `rota server` opens.
//!
//! Driver: tokio-postgres (with deadpool-postgres for pooling), chosen over sqlx by
//! measurement on this machine's PostgreSQL 15 (release builds, one connection, 3 rounds,
//! the machine otherwise busy): a prepared `SELECT $1` round trip took 34–77 µs with
//! tokio-postgres against 80–173 µs with sqlx, and a transaction of 5 inserts plus a
//! `FOR UPDATE SKIP LOCKED` claim of 5 rows 0.97–2.8 ms against 1.3–3.7 ms. It also
//! mirrors the SQLite backend (hand-written SQL, explicit transactions) and gives direct
//! access to a connection's notifications (`LISTEN`) and session-level advisory locks.
//!
//! # Layout
//! - `schema`: embedded migrations (`migrations/`) under an advisory lock; `tx`: the
//!   transaction retry loop, per-item savepoints and statement helpers.
//! - `submit`, `claim`, `complete`, `lease`, `control`, `fleet`, `workers`, `prune`: the
//!   write paths, one file per concern; `settle` and `attempts` are what they share.
//! - `jobs_read`: job listings and records; `logs`: log chunks (tables of their own);
//!   `quota`: which finished jobs' logs the total log quota deletes first;
//!   `credentials`: the admin and join token hashes.
//! - `clock`: the database server's clock, behind `JobStore::now`.
//! - `codec`: column encodings; `error`: [`PgError`] and the mapping to `StoreError`.
//!
//! Job rules and reason texts are `rota_domain`'s (`settle`, `control`, `reason`); this
//! crate writes the plans they return, as `rota-store-sqlite` does.

mod attempts;
mod claim;
mod clock;
mod codec;
mod complete;
mod control;
mod credentials;
mod error;
mod fleet;
mod jobs_read;
mod lease;
mod logs;
#[cfg(test)]
mod plans;
mod prune;
mod quota;
mod schema;
mod settle;
mod submit;
mod tx;
mod workers;

pub use error::PgError;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rota_domain::{AttemptId, JobId, SessionId};
use rota_store::{
    ClaimedAttempt, Claimer, Completion, CompletionRecorded, CredentialHashes, CredentialKind, Heartbeat,
    HeartbeatOutcome, JobFilter, JobRecord, JobRow, JobStore, KeyRevokeOutcome, KeyRevokeRecord,
    KeyRevokeRequest, LogAppend, LogPage, LogQuery, LogUsage, LostAttempt, NewJob, QueueStats, Registered,
    RevokeOutcome, RevokeRecord, RevokeRequest, RunningAttempt, StopKind, StopOutcome, StoreError, Submitted,
    SubmittedAndClaimed, WorkerRecord, WorkerRegistration,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tx::{Durability, in_tx, item};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Jobs deleted per transaction when pruning.
const PRUNE_CHUNK: i64 = 2_000;
/// After the quota is reached, pruning frees down to this share of it (per mille).
const QUOTA_LOW_WATER_PERMILLE: u64 = 900;
/// A prune that found nothing to delete is not tried again sooner than this.
const QUOTA_RETRY: Duration = Duration::from_secs(1);

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
            pool_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The total log quota's counters. Live bytes are this server's view: read from the
/// database at connect and after pruning, moved by its own appends in between.
struct LogQuota {
    quota: Option<u64>,
    live: AtomicU64,
    pruned: AtomicU64,
    refused: AtomicU64,
    /// Held while pruning; remembers when a prune last found nothing to delete.
    pruning: tokio::sync::Mutex<Option<Instant>>,
}

/// The PostgreSQL [`JobStore`]: a pool of connections to one database that any number of
/// servers share.
pub struct PgStore {
    pool: Pool,
    quota: LogQuota,
    clock: clock::Clock,
}

impl PgStore {
    /// Connects to the database at `url`, applying the migrations it has not seen (once,
    /// whichever of several servers starting together gets there first). Refuses a schema
    /// newer than this build unless its newest migration is compatible with it.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore, PgError> {
        let mut cfg: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
        cfg.connect_timeout(opts.connect_timeout);
        if let Some(t) = opts.statement_timeout {
            cfg.options(format!("-c statement_timeout={}", t.as_millis()));
        }
        cfg.application_name("rota");
        let target = describe_target(&cfg);
        let manager = Manager::from_config(
            cfg,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.pool_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let store = PgStore {
            pool,
            quota: LogQuota {
                quota: None,
                live: AtomicU64::new(0),
                pruned: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                pruning: tokio::sync::Mutex::new(None),
            },
            clock: clock::Clock::default(),
        };
        // The first connection says whether the database can be reached at all.
        let first =
            store.pool.get().await.map_err(|e| PgError::Unreachable { target, detail: e.to_string() })?;
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

    /// Sets the total log quota in live bytes (`None`, the default: unbounded), before the
    /// store is shared. Past it the oldest finished jobs' logs are deleted, then new output
    /// is refused; both are recorded per attempt.
    pub fn set_log_quota(&mut self, quota: Option<u64>) {
        self.quota.quota = quota;
    }

    /// Closes the pool: pooled connections are closed, calls in flight finish.
    pub fn close(&self) {
        self.pool.close();
    }

    async fn client(&self) -> error::Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Reads the live log bytes from the database.
    async fn refresh_live(&self) -> Result<()> {
        let live: i64 =
            in_tx!(self, Durability::Read, |tx| tx::one(&tx, logs::LIVE, &[]).await?.try_get(0)?)?;
        self.quota.live.store(codec::u64_of(live), Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the logs of the oldest finished jobs until `incoming` more bytes fit under
    /// the low-water mark, if the quota would otherwise be passed. Jobs still running keep
    /// theirs: once nothing finished is left, appends refuse new chunks instead.
    async fn make_room(&self, quota: u64, incoming: u64) -> Result<()> {
        let fits = |live: u64| live.saturating_add(incoming) <= quota;
        if fits(self.quota.live.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let mut last_fruitless = self.quota.pruning.lock().await;
        self.refresh_live().await?;
        let live = self.quota.live.load(Ordering::Relaxed);
        if fits(live) || last_fruitless.is_some_and(|t: Instant| t.elapsed() < QUOTA_RETRY) {
            return Ok(());
        }
        let low_water = quota / 1000 * QUOTA_LOW_WATER_PERMILLE;
        let need = live.saturating_add(incoming).saturating_sub(low_water);
        let chosen = in_tx!(self, Durability::Relaxed, |tx| quota::choose(&tx, need).await?)?;
        if chosen.is_empty() {
            *last_fruitless = Some(Instant::now());
            return Ok(());
        }
        *last_fruitless = None;
        let ids: Vec<uuid::Uuid> = chosen.iter().map(|c| c.0).collect();
        for chunk in ids.chunks(PRUNE_CHUNK as usize) {
            in_tx!(self, Durability::Relaxed, |tx| quota::prune_jobs(&tx, chunk).await?)?;
        }
        let before = live;
        self.refresh_live().await?;
        let freed = before.saturating_sub(self.quota.live.load(Ordering::Relaxed));
        self.quota.pruned.fetch_add(freed, Ordering::Relaxed);
        tracing::info!(
            jobs = chosen.len(),
            freed_bytes = freed,
            quota_bytes = quota,
            "log quota reached: deleted the logs of the oldest finished jobs"
        );
        Ok(())
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

#[async_trait]
impl JobStore for PgStore {
    async fn submit_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Submitted>>> {
        in_tx!(self, Durability::Full, |tx| submit::submit_jobs(&mut tx, &jobs).await?)
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        in_tx!(self, Durability::Read, |tx| jobs_read::get_job(&tx, id).await?)
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        in_tx!(self, Durability::Read, |tx| jobs_read::list_jobs(&tx, filter).await?)
    }

    async fn stop_job(&self, id: JobId, kind: StopKind, now: DateTime<Utc>) -> Result<StopOutcome> {
        in_tx!(self, Durability::Full, |tx| control::stop_job(&tx, id, kind, now).await?)
    }

    async fn retry_job(&self, id: JobId, _now: DateTime<Utc>) -> Result<JobRow> {
        in_tx!(self, Durability::Full, |tx| control::retry_job(&tx, id).await?)
    }

    async fn register_worker(&self, reg: WorkerRegistration, now: DateTime<Utc>) -> Result<Registered> {
        in_tx!(self, Durability::Full, |tx| workers::register_worker(&tx, &reg, now).await?)
    }

    async fn unregister_worker(&self, session: SessionId, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
        in_tx!(self, Durability::Relaxed, |tx| workers::unregister_worker(&tx, session, now).await?)
    }

    async fn session_by_token(&self, token_hash: &str) -> Result<Option<WorkerRecord>> {
        in_tx!(self, Durability::Read, |tx| workers::session_by_token(&tx, token_hash).await?)
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        in_tx!(self, Durability::Read, |tx| workers::list_workers(&tx).await?)
    }

    async fn heartbeat(&self, hb: Heartbeat, now: DateTime<Utc>, ttl: Duration) -> Result<HeartbeatOutcome> {
        in_tx!(self, Durability::Relaxed, |tx| lease::heartbeat(&tx, &hb, now, ttl).await?)
    }

    async fn submit_and_claim(
        &self,
        jobs: Vec<NewJob>,
        claimers: Vec<Claimer>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<SubmittedAndClaimed> {
        // One durable transaction: the claims see the new rows, and the parked workers get
        // their steps when the submitter gets its reply.
        in_tx!(self, Durability::Full, |tx| {
            let submitted = submit::submit_jobs(&mut tx, &jobs).await?;
            let mut claimed = Vec::with_capacity(claimers.len());
            for w in &claimers {
                claimed.push(item!(tx, |sp| claim::claim(&sp, w.session, w.max, now, ttl).await));
            }
            SubmittedAndClaimed { submitted, claimed }
        })
    }

    async fn claim(
        &self,
        session: SessionId,
        max: u32,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<ClaimedAttempt>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        in_tx!(self, Durability::Relaxed, |tx| claim::claim(&tx, session, max, now, ttl).await?)
    }

    async fn record_start(&self, session: SessionId, attempt: AttemptId, pid: u32) -> Result<()> {
        in_tx!(self, Durability::Relaxed, |tx| complete::record_start(&tx, session, attempt, pid).await?)
    }

    async fn complete(
        &self,
        items: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<CompletionRecorded>>> {
        in_tx!(self, Durability::Relaxed, |tx| complete::complete(&mut tx, &items, now).await?)
    }

    async fn append_logs(&self, items: Vec<LogAppend>) -> Result<Vec<Result<()>>> {
        let quota = self.quota.quota;
        if let Some(q) = quota {
            let incoming: u64 = items.iter().flat_map(|i| &i.chunks).map(|c| c.data.len() as u64).sum();
            self.make_room(q, incoming).await?;
        }
        let (results, delta, refused) = in_tx!(self, Durability::Relaxed, |tx| {
            logs::lock_jobs(&tx, &items).await?;
            let mut live = self.quota.live.load(Ordering::Relaxed);
            let (mut delta, mut refused) = (0i64, 0u64);
            let mut results = Vec::with_capacity(items.len());
            for a in &items {
                let r = item!(tx, |sp| logs::append_one(&sp, a, quota, live).await);
                results.push(r.map(|done| {
                    live = live.saturating_add_signed(done.live_delta);
                    delta += done.live_delta;
                    refused += done.refused;
                }));
            }
            (results, delta, refused)
        })?;
        if delta >= 0 {
            self.quota.live.fetch_add(codec::u64_of(delta), Ordering::Relaxed);
        } else {
            self.quota.live.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        if refused > 0 {
            self.quota.refused.fetch_add(refused, Ordering::Relaxed);
        }
        Ok(results)
    }

    async fn read_logs(&self, q: &LogQuery) -> Result<LogPage> {
        in_tx!(self, Durability::Read, |tx| logs::read_logs(&tx, q).await?)
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
        in_tx!(self, Durability::Relaxed, |tx| lease::expire_leases(&tx, now).await?)
    }

    async fn extend_live_leases(&self, now: DateTime<Utc>, ttl: Duration) -> Result<u64> {
        in_tx!(self, Durability::Relaxed, |tx| lease::extend_live_leases(&tx, now, ttl).await?)
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>> {
        in_tx!(self, Durability::Full, |tx| control::expire_deadlines(&tx, now).await?)
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64> {
        // Small transactions: a long delete would hold its locks (and bloat) for seconds.
        let mut pruned = 0;
        loop {
            let n = in_tx!(self, Durability::Relaxed, |tx| {
                let ids = prune::finished_before(&tx, before, PRUNE_CHUNK).await?;
                (ids.len(), prune::delete_jobs(&tx, &ids, before).await?)
            })?;
            pruned += n.1;
            if (n.0 as i64) < PRUNE_CHUNK || n.1 == 0 {
                break;
            }
        }
        in_tx!(self, Durability::Relaxed, |tx| prune::delete_old_sessions(&tx, before).await?)?;
        self.refresh_live().await?;
        Ok(pruned)
    }

    async fn revoke_jobs(
        &self,
        reqs: Vec<RevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<RevokeOutcome>>> {
        // Durable before the reply (and before any broadcast): a revoke must survive a crash.
        in_tx!(self, Durability::Full, |tx| fleet::revoke_jobs(&mut tx, &reqs, now).await?)
    }

    async fn revoke_keys(
        &self,
        reqs: Vec<KeyRevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<KeyRevokeOutcome>>> {
        in_tx!(self, Durability::Full, |tx| fleet::revoke_keys(&mut tx, &reqs, now).await?)
    }

    async fn list_revokes(&self, now: DateTime<Utc>) -> Result<Vec<RevokeRecord>> {
        in_tx!(self, Durability::Read, |tx| fleet::list_revokes(&tx, now).await?)
    }

    async fn list_key_revokes(&self, now: DateTime<Utc>) -> Result<Vec<KeyRevokeRecord>> {
        in_tx!(self, Durability::Read, |tx| fleet::list_key_revokes(&tx, now).await?)
    }

    async fn prune_revokes(&self, now: DateTime<Utc>) -> Result<u64> {
        in_tx!(self, Durability::Relaxed, |tx| fleet::prune_revokes(&tx, now).await?)
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool, now: DateTime<Utc>) -> Result<bool> {
        in_tx!(self, Durability::Full, |tx| fleet::set_paused(&tx, queue, paused, now).await?)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        in_tx!(self, Durability::Read, |tx| fleet::queue_stats(&tx).await?)
    }

    /// The database server's clock (its offset measured at connect).
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn log_usage(&self) -> LogUsage {
        LogUsage {
            live_bytes: self.quota.live.load(Ordering::Relaxed),
            quota_bytes: self.quota.quota,
            pruned_bytes: self.quota.pruned.load(Ordering::Relaxed),
            refused_bytes: self.quota.refused.load(Ordering::Relaxed),
        }
    }

    async fn credential_hashes(&self) -> Result<CredentialHashes> {
        in_tx!(self, Durability::Read, |tx| credentials::credential_hashes(&tx).await?)
    }

    async fn init_credentials(
        &self,
        proposed: &CredentialHashes,
        now: DateTime<Utc>,
    ) -> Result<CredentialHashes> {
        in_tx!(self, Durability::Full, |tx| credentials::init_credentials(&tx, proposed, now).await?)
    }

    async fn rotate_credential(&self, kind: CredentialKind, hash: &str, now: DateTime<Utc>) -> Result<()> {
        in_tx!(self, Durability::Full, |tx| credentials::rotate_credential(&tx, kind, hash, now).await?)
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
        let err = client.query_one("SELECT pg_sleep(3)", &[]).await.expect_err("cancelled by the timeout");
        assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{err}");
    }
}
