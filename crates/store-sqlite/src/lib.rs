//! rota's embedded storage: [`SqliteStore`] implements [`rota_store::JobStore`] on SQLite.
//!
//! Two files: the main database (jobs, steps, attempts, workers) and `<path>.logs` (log
//! chunks), so a step writing hundreds of MB never delays claims. Each file has one writer
//! thread with group commit and a pool of read-only connections. The job rules and
//! reason texts are `rota_domain`'s (`settle`, `control`, `reason`); this crate writes the
//! plans they return.
//!
//! # Layout
//! - `writer`: the group-commit writer thread; `readers`: the read-only pool.
//! - `schema`: connections, PRAGMAs, embedded migrations (`migrations/{main,logs}/`).
//! - `submit`, `claim`, `complete`, `lease`, `control`, `fleet`, `workers`, `prune`: the write
//!   paths, one file per concern; `settle` and `attempts` are what they share.
//! - `credentials`: the admin and join token hashes (migration 6).
//! - `resources`: declared resources (`rota apply`, migration 7).
//! - `secrets`: sealed secrets and the key fingerprint (migration 11).
//! - `schedules`: the fire times of schedules, a run with its job (migration 9).
//! - `jobs_read`: job listings and records; `logs`: the log file; `quota`: which finished
//!   jobs' logs the total log quota deletes first.
//! - `export`: [`SqliteExporter`], reading a stopped store whole for `rota migrate`.
//! - `codec`: column encodings; `error`: [`SqliteError`] and the mapping to `StoreError`.

/// Jobs deleted per transaction when pruning.
const PRUNE_CHUNK: usize = 2_000;

mod attempts;
mod claim;
mod codec;
mod complete;
mod control;
mod credentials;
mod error;
mod export;
mod fleet;
mod jobs_read;
mod lease;
mod logs;
#[cfg(test)]
mod plans;
mod prune;
mod quota;
mod readers;
mod resources;
mod schedules;
mod schema;
mod secrets;
mod settle;
mod spec_cache;
mod submit;
mod workers;
mod writer;

pub use error::SqliteError;
pub use export::SqliteExporter;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use readers::Readers;
use rota_domain::{AttemptId, JobId, SessionId};
use rota_store::{
    ClaimedAttempt, Claimer, CompletedAndClaimed, Completion, CompletionRecorded, CredentialHashes,
    CredentialKind, Heartbeat, HeartbeatOutcome, JobFilter, JobRecord, JobRow, JobStore, KeyRevokeOutcome,
    KeyRevokeRecord, KeyRevokeRequest, LogAppend, LogPage, LogQuery, LogUsage, LostAttempt, NewJob,
    QueueStats, Registered, RevokeOutcome, RevokeRecord, RevokeRequest, RunningAttempt, StopKind,
    StopOutcome, StoreError, Submitted, SubmittedAndClaimed, Throughput, WorkerRecord, WorkerRegistration,
    private_file,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use writer::{Durability, Writer, unsaved_item};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long a connection waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// Idle read-only connections kept per database file.
    pub reader_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { busy_timeout: Duration::from_secs(5), reader_connections: 4 }
    }
}

/// After the quota is reached, pruning frees down to this share of it (per mille), so it
/// does not run again for every append.
const QUOTA_LOW_WATER_PERMILLE: u64 = 900;
/// A prune that found nothing to delete is not tried again sooner than this.
const QUOTA_RETRY: Duration = Duration::from_secs(1);

/// The total log quota's counters (live bytes mirror the `log_usage` row).
struct LogQuota {
    quota: Option<u64>,
    live: Arc<AtomicU64>,
    pruned: AtomicU64,
    refused: AtomicU64,
    /// Held while pruning; remembers when a prune last found nothing to delete.
    pruning: tokio::sync::Mutex<Option<Instant>>,
}

/// The SQLite [`JobStore`]. Dropping it finishes queued writes and closes the files.
pub struct SqliteStore {
    path: PathBuf,
    logs_path: PathBuf,
    main: Writer,
    logs: Writer,
    main_readers: Arc<Readers>,
    logs_readers: Arc<Readers>,
    quota: LogQuota,
}

/// Whether `path` names a file on disk (not `:memory:` or a `file:` URI), so its mode can
/// be set.
fn is_file_path(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    !s.is_empty() && s != ":memory:" && !s.starts_with("file:")
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path` and its logs file
    /// `<path>.logs`. Refuses a database written by a newer rota.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(SqliteError::Io)?;
        }
        let logs_path = Self::logs_path_for(path);
        // 0600 before SQLite opens them: it creates the -wal and -shm files with the mode
        // of their database, so those follow; older ones are tightened after the open.
        for p in [path, logs_path.as_path()].into_iter().filter(|p| is_file_path(p)) {
            private_file::ensure(p).map_err(SqliteError::Io)?;
        }
        let mut main = schema::open_writer(path, opts.busy_timeout)?;
        schema::migrate(&mut main, schema::MAIN, path)?;
        if is_file_path(&logs_path) {
            logs::size_pages_if_new(&logs_path)?;
        }
        let mut logs = schema::open_writer(&logs_path, opts.busy_timeout)?;
        schema::migrate(&mut logs, schema::LOGS, &logs_path)?;
        for p in [path, logs_path.as_path()].into_iter().filter(|p| is_file_path(p)) {
            for suffix in ["-wal", "-shm"] {
                let mut side = p.as_os_str().to_owned();
                side.push(suffix);
                private_file::tighten(Path::new(&side)).map_err(SqliteError::Io)?;
            }
        }
        let live = logs::live_bytes(&logs).map_err(StoreError::from)?;
        let keep = opts.reader_connections;
        Ok(SqliteStore {
            main: Writer::spawn("main", main)?,
            logs: Writer::spawn("logs", logs)?,
            main_readers: Readers::new("main readers", path.to_path_buf(), opts.busy_timeout, keep),
            logs_readers: Readers::new("logs readers", logs_path.clone(), opts.busy_timeout, keep),
            path: path.to_path_buf(),
            logs_path,
            quota: LogQuota {
                quota: None,
                live: Arc::new(AtomicU64::new(live)),
                pruned: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                pruning: tokio::sync::Mutex::new(None),
            },
        })
    }

    /// Sets the total log quota in live bytes (`None`, the default: unbounded), before the
    /// store is shared; the caller may derive it from the live bytes it reports once open.
    /// Past the quota the oldest finished jobs' logs are deleted, then new output is
    /// refused; both are recorded per attempt.
    pub fn set_log_quota(&mut self, quota: Option<u64>) {
        self.quota.quota = quota;
    }

    /// The logs file that goes with the database at `path`.
    pub fn logs_path_for(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".logs");
        PathBuf::from(name)
    }

    /// The main database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The logs database file.
    pub fn logs_path(&self) -> &Path {
        &self.logs_path
    }

    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        work: impl FnOnce(&rusqlite::Connection) -> error::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.main.run(durability, work).await
    }

    /// Deletes the logs of the oldest finished jobs until `incoming` more bytes fit under
    /// the low-water mark, if the quota would otherwise be passed. Jobs still running keep
    /// theirs: once nothing finished is left, `logs::append` refuses new chunks instead.
    async fn make_room(&self, quota: u64, incoming: u64) -> Result<()> {
        let fits = |live: u64| live.saturating_add(incoming) <= quota;
        // Almost every append fits: it must not queue on the pruning lock to learn that.
        if fits(self.quota.live.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let mut last_fruitless = self.quota.pruning.lock().await;
        let live = self.quota.live.load(Ordering::Relaxed);
        if fits(live) || last_fruitless.is_some_and(|t: Instant| t.elapsed() < QUOTA_RETRY) {
            return Ok(());
        }
        let low_water = quota / 1000 * QUOTA_LOW_WATER_PERMILLE;
        let need = live.saturating_add(incoming).saturating_sub(low_water);
        let with_logs: HashMap<String, u64> =
            self.logs_readers.run(quota::jobs_with_logs).await?.into_iter().collect();
        let ids = serde_json::to_string(&with_logs.keys().collect::<Vec<_>>())
            .map_err(|e| SqliteError::Corrupt(e.to_string()))?;
        let finished = self.main_readers.run(move |c| quota::finished_oldest_first(c, &ids)).await?;
        let mut chosen = Vec::new();
        let mut planned = 0u64;
        for id in finished {
            if planned >= need {
                break;
            }
            planned += with_logs.get(&id).copied().unwrap_or(0);
            chosen.push(id);
        }
        if chosen.is_empty() {
            *last_fruitless = Some(Instant::now());
            return Ok(());
        }
        *last_fruitless = None;
        let mut freed = 0;
        for chunk in chosen.chunks(PRUNE_CHUNK) {
            let ids = serde_json::to_string(chunk).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
            let (n, live) = self.logs.run(Durability::Normal, move |c| quota::prune_jobs(c, &ids)).await?;
            freed += n;
            self.quota.live.store(live, Ordering::Relaxed);
        }
        self.quota.pruned.fetch_add(freed, Ordering::Relaxed);
        tracing::info!(
            jobs = chosen.len(),
            freed_bytes = freed,
            quota_bytes = quota,
            "log quota reached: deleted the logs of the oldest finished jobs"
        );
        Ok(())
    }

    /// A write whose items each run in their own savepoint (see `Writer::run_itemised`).
    async fn write_items<T: Send + 'static>(
        &self,
        durability: Durability,
        work: impl FnOnce(&rusqlite::Connection) -> error::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.main.run_itemised(durability, work).await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn submit_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Submitted>>> {
        self.write_items(Durability::Full, move |c| submit::submit_jobs(c, jobs)).await
    }

    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.main_readers.run(move |c| jobs_read::get_job(c, id)).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        let filter = filter.clone();
        self.main_readers.run(move |c| jobs_read::list_jobs(c, &filter)).await
    }

    async fn throughput(&self, since: DateTime<Utc>, namespace: Option<&str>) -> Result<Throughput> {
        let namespace = namespace.map(str::to_string);
        self.main_readers.run(move |c| jobs_read::throughput(c, since, namespace.as_deref())).await
    }

    async fn stop_job(&self, id: JobId, kind: StopKind, now: DateTime<Utc>) -> Result<StopOutcome> {
        self.write(Durability::Full, move |c| control::stop_job(c, id, kind, now)).await
    }

    async fn retry_job(&self, id: JobId, _now: DateTime<Utc>) -> Result<JobRow> {
        self.write(Durability::Full, move |c| control::retry_job(c, id)).await
    }

    async fn register_worker(&self, reg: WorkerRegistration, now: DateTime<Utc>) -> Result<Registered> {
        self.write(Durability::Full, move |c| workers::register_worker(c, &reg, now)).await
    }

    async fn unregister_worker(&self, session: SessionId, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
        self.write(Durability::Normal, move |c| workers::unregister_worker(c, session, now)).await
    }

    async fn set_worker_queues(&self, session: SessionId, queues: Vec<String>) -> Result<bool> {
        self.write(Durability::Normal, move |c| workers::set_worker_queues(c, session, &queues)).await
    }

    async fn session_by_token(&self, token_hash: &str) -> Result<Option<WorkerRecord>> {
        let token_hash = token_hash.to_string();
        self.main_readers.run(move |c| workers::session_by_token(c, &token_hash)).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        self.main_readers.run(workers::list_workers).await
    }

    async fn forget_worker(
        &self,
        namespace: &str,
        name: &str,
        block: bool,
        now: DateTime<Utc>,
    ) -> Result<rota_store::Forgotten> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        // Full: an operator cutting a credential off must not see it come back after a crash.
        self.write(Durability::Full, move |c| workers::forget_worker(c, &namespace, &name, block, now)).await
    }

    async fn unblock_worker(&self, namespace: &str, name: &str) -> Result<bool> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.write(Durability::Full, move |c| workers::unblock_worker(c, &namespace, &name)).await
    }

    async fn is_forgotten(&self, token_hash: &str) -> Result<bool> {
        let token_hash = token_hash.to_string();
        self.main_readers.run(move |c| workers::is_forgotten(c, &token_hash)).await
    }

    async fn heartbeat(&self, hb: Heartbeat, now: DateTime<Utc>, ttl: Duration) -> Result<HeartbeatOutcome> {
        self.write(Durability::Normal, move |c| lease::heartbeat(c, &hb, now, ttl)).await
    }

    async fn submit_and_claim(
        &self,
        jobs: Vec<NewJob>,
        claimers: Vec<Claimer>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<SubmittedAndClaimed> {
        // One writer op, one durable commit: the claims see the new rows, and the parked
        // workers get their steps when the submitter gets its reply.
        self.write_items(Durability::Full, move |c| {
            let submitted = submit::submit_jobs(c, jobs)?;
            let claimed = claimers
                .iter()
                .map(|w| unsaved_item(c, |c| claim::claim(c, w.session, w.max, now, ttl)))
                .collect::<error::Result<Vec<_>>>()?;
            Ok(SubmittedAndClaimed { submitted, claimed })
        })
        .await
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
        self.write_items(Durability::Normal, move |c| claim::claim(c, session, max, now, ttl)).await
    }

    async fn record_start(&self, session: SessionId, attempt: AttemptId, pid: u32) -> Result<()> {
        self.write(Durability::Normal, move |c| complete::record_start(c, session, attempt, pid)).await
    }

    async fn complete(
        &self,
        items: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<CompletionRecorded>>> {
        self.write_items(Durability::Normal, move |c| complete::complete(c, items, now)).await
    }

    async fn complete_and_claim(
        &self,
        items: Vec<Completion>,
        claimer: Claimer,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<CompletedAndClaimed> {
        // One writer op, one commit: the claim sees the steps the completions readied.
        self.write_items(Durability::Normal, move |c| {
            let completed = complete::complete(c, items, now)?;
            let claimed = if claimer.max == 0 {
                Ok(Vec::new())
            } else {
                unsaved_item(c, |c| claim::claim(c, claimer.session, claimer.max, now, ttl))?
            };
            Ok(CompletedAndClaimed { completed, claimed })
        })
        .await
    }

    async fn append_logs(&self, items: Vec<LogAppend>) -> Result<Vec<Result<()>>> {
        let checked = self
            .main_readers
            .run(move |c| Ok(items.into_iter().map(|i| logs::check_append(c, i)).collect::<Vec<_>>()))
            .await?;
        let mut results: Vec<Result<()>> = Vec::with_capacity(checked.len());
        let mut positions = Vec::new();
        let mut valid = Vec::new();
        for (i, r) in checked.into_iter().enumerate() {
            match r {
                Ok(item) => {
                    positions.push(i);
                    valid.push(item);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e.into())),
            }
        }
        if !valid.is_empty() {
            let quota = self.quota.quota;
            if let Some(q) = quota {
                let incoming: u64 =
                    valid.iter().flat_map(|i| &i.append.chunks).map(|c| c.data.len() as u64).sum();
                self.make_room(q, incoming).await?;
            }
            let live = self.quota.live.clone();
            let stored = self
                .logs
                .run(Durability::Normal, move |c| {
                    let done = logs::append(c, valid, quota)?;
                    // On the writer thread, so updates land in commit order.
                    live.store(done.live, Ordering::Relaxed);
                    Ok(done)
                })
                .await?;
            if stored.refused > 0 {
                self.quota.refused.fetch_add(stored.refused, Ordering::Relaxed);
            }
            for (i, r) in positions.into_iter().zip(stored.results) {
                results[i] = r;
            }
        }
        Ok(results)
    }

    async fn read_logs(&self, q: &LogQuery) -> Result<LogPage> {
        let q = q.clone();
        self.logs_readers.run(move |c| logs::read_logs(c, &q)).await
    }

    async fn log_tail_cursor(&self, job_id: JobId, step: Option<&str>, max_bytes: u64) -> Result<i64> {
        let step = step.map(str::to_string);
        self.logs_readers.run(move |c| logs::tail_cursor(c, job_id, step.as_deref(), max_bytes)).await
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<LostAttempt>> {
        self.write(Durability::Normal, move |c| lease::expire_leases(c, now)).await
    }

    async fn extend_live_leases(&self, now: DateTime<Utc>, ttl: Duration) -> Result<u64> {
        self.write(Durability::Normal, move |c| lease::extend_live_leases(c, now, ttl)).await
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>> {
        self.write(Durability::Normal, move |c| control::expire_deadlines(c, now)).await
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64> {
        let ids = self.main_readers.run(move |c| prune::finished_before(c, before)).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        // In chunks, so a large backlog (the first prune after a long downtime) never holds
        // the writer, and with it every claim and submit, for seconds.
        let mut pruned = 0;
        for chunk in ids.chunks(PRUNE_CHUNK) {
            let ids = serde_json::to_string(chunk).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
            let for_logs = ids.clone();
            let live = self.quota.live.clone();
            self.logs
                .run(Durability::Normal, move |c| {
                    logs::delete_jobs(c, &for_logs)?;
                    live.store(logs::live_bytes(c)?, Ordering::Relaxed);
                    Ok(())
                })
                .await?;
            pruned += self.write(Durability::Normal, move |c| prune::delete_jobs(c, &ids, before)).await?;
        }
        Ok(pruned)
    }

    async fn revoke_jobs(
        &self,
        reqs: Vec<RevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<RevokeOutcome>>> {
        // Durable before the reply (and before any broadcast): a revoke must survive a crash.
        self.write_items(Durability::Full, move |c| fleet::revoke_jobs(c, reqs, now)).await
    }

    async fn revoke_keys(
        &self,
        reqs: Vec<KeyRevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<KeyRevokeOutcome>>> {
        // Durable before the reply, as job revokes.
        self.write_items(Durability::Full, move |c| fleet::revoke_keys(c, reqs, now)).await
    }

    async fn list_revokes(&self, now: DateTime<Utc>) -> Result<Vec<RevokeRecord>> {
        self.main_readers.run(move |c| fleet::list_revokes(c, now)).await
    }

    async fn list_key_revokes(&self, now: DateTime<Utc>) -> Result<Vec<KeyRevokeRecord>> {
        self.main_readers.run(move |c| fleet::list_key_revokes(c, now)).await
    }

    async fn prune_revokes(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(Durability::Normal, move |c| fleet::prune_revokes(c, now)).await
    }

    async fn set_queue_paused(
        &self,
        namespace: &str,
        queue: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (namespace, queue) = (namespace.to_string(), queue.to_string());
        self.write(Durability::Full, move |c| fleet::set_paused(c, &namespace, &queue, paused, now)).await
    }

    async fn queue_stats(&self, namespace: Option<&str>) -> Result<Vec<QueueStats>> {
        let namespace = namespace.map(str::to_string);
        self.main_readers.run(move |c| fleet::queue_stats(c, namespace.as_deref())).await
    }

    async fn credential_hashes(&self) -> Result<CredentialHashes> {
        self.main_readers.run(credentials::credential_hashes).await
    }

    async fn init_credentials(
        &self,
        proposed: &CredentialHashes,
        now: DateTime<Utc>,
    ) -> Result<CredentialHashes> {
        let proposed = proposed.clone();
        // Durable: a token file is only worth keeping once the store holds its hash.
        self.write(Durability::Full, move |c| credentials::init_credentials(c, &proposed, now)).await
    }

    async fn rotate_credential(&self, kind: CredentialKind, hash: &str, now: DateTime<Utc>) -> Result<()> {
        let hash = hash.to_string();
        self.write(Durability::Full, move |c| credentials::rotate_credential(c, kind, &hash, now)).await
    }

    async fn rotate_credential_with_grace(
        &self,
        kind: CredentialKind,
        rotation: &rota_store::GraceRotation,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let rotation = rotation.clone();
        self.write(Durability::Full, move |c| credentials::rotate_with_grace(c, kind, &rotation, now)).await
    }

    async fn apply_resources(
        &self,
        writes: Vec<rota_store::resources::ResourceWrite>,
        now: DateTime<Utc>,
    ) -> Result<Vec<rota_store::resources::AppliedResource>> {
        self.write(Durability::Full, move |c| resources::apply(c, &writes, now)).await
    }

    async fn delete_resources(&self, keys: Vec<rota_store::resources::ResourceKey>) -> Result<Vec<bool>> {
        self.write(Durability::Full, move |c| resources::delete(c, &keys)).await
    }

    async fn get_resource(
        &self,
        key: &rota_store::resources::ResourceKey,
    ) -> Result<Option<rota_store::resources::ResourceRecord>> {
        let key = key.clone();
        self.main_readers.run(move |c| resources::get_one(c, &key)).await
    }

    async fn list_resources(
        &self,
        kind: rota_domain::resource::Kind,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<rota_store::resources::ResourceRecord>> {
        let namespace = namespace.map(str::to_string);
        let after = after.map(|(n, m)| (n.to_string(), m.to_string()));
        self.main_readers
            .run(move |c| {
                let after = after.as_ref().map(|(n, m)| (n.as_str(), m.as_str()));
                resources::list(c, kind, namespace.as_deref(), after, limit)
            })
            .await
    }

    async fn set_resource_status(
        &self,
        key: &rota_store::resources::ResourceKey,
        generation: u64,
        status: &rota_domain::resource::Status,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (key, status) = (key.clone(), status.clone());
        self.write(Durability::Normal, move |c| resources::set_status(c, &key, generation, &status, now))
            .await
    }

    fn log_usage(&self) -> LogUsage {
        LogUsage {
            live_bytes: self.quota.live.load(Ordering::Relaxed),
            quota_bytes: self.quota.quota,
            pruned_bytes: self.quota.pruned.load(Ordering::Relaxed),
            refused_bytes: self.quota.refused.load(Ordering::Relaxed),
        }
    }

    async fn record_fires(
        &self,
        fires: Vec<rota_store::schedules::NewFire>,
        now: DateTime<Utc>,
    ) -> Result<Vec<rota_store::schedules::FireRecord>> {
        // Full: a run's job is a submit, durable before it is acknowledged.
        self.write(Durability::Full, move |c| schedules::record(c, fires, now)).await
    }

    async fn list_fires(
        &self,
        namespace: &str,
        schedule: &str,
        filter: rota_store::schedules::FireFilter,
        limit: u32,
    ) -> Result<Vec<rota_store::schedules::FireRecord>> {
        let (namespace, schedule) = (namespace.to_string(), schedule.to_string());
        self.main_readers.run(move |c| schedules::list(c, &namespace, &schedule, filter, limit)).await
    }

    async fn prune_fires(&self, before: DateTime<Utc>) -> Result<u64> {
        let chunk = rota_store::schedules::PRUNE_CHUNK;
        let mut pruned = 0;
        loop {
            let n = self.write(Durability::Normal, move |c| schedules::prune(c, before, chunk)).await?;
            pruned += n;
            if n < u64::from(chunk) {
                return Ok(pruned);
            }
        }
    }

    async fn secret_key_fingerprint(&self) -> Result<Option<String>> {
        self.main_readers.run(secrets::fingerprint).await
    }

    async fn init_secret_key(&self, fingerprint: &str, now: DateTime<Utc>) -> Result<String> {
        let fp = fingerprint.to_string();
        self.write(Durability::Full, move |c| secrets::init_key(c, &fp, now)).await
    }

    async fn put_secret(
        &self,
        write: rota_store::secrets::SecretWrite,
        now: DateTime<Utc>,
    ) -> Result<rota_domain::resource::Applied> {
        self.write(Durability::Full, move |c| secrets::put(c, &write, now)).await
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<rota_store::secrets::SecretRecord>> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        self.main_readers.run(move |c| secrets::get(c, &ns, &name)).await
    }

    async fn list_secrets(&self, namespace: &str) -> Result<Vec<rota_store::secrets::SecretRecord>> {
        let ns = namespace.to_string();
        self.main_readers.run(move |c| secrets::list(c, Some(&ns))).await
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        self.write(Durability::Full, move |c| secrets::delete(c, &ns, &name)).await
    }

    async fn all_secrets(&self) -> Result<Vec<rota_store::secrets::SecretRecord>> {
        self.main_readers.run(|c| secrets::list(c, None)).await
    }

    async fn reseal_secrets(
        &self,
        from: &str,
        to: &str,
        resealed: Vec<rota_store::secrets::SecretRecord>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(Durability::Full, move |c| secrets::reseal(c, &from, &to, &resealed, now)).await
    }
}
