//! The storage seam: [`JobStore`], the one trait the server talks to, its record types and
//! [`StoreError`]. Backends (`rota-store-sqlite`, later `rota-store-postgres`) implement it;
//! the server and worker never name a backend.
//!
//! Every state change happens inside the store so that it is atomic and fenced: claims,
//! completions, lease expiry and cancellation are each one transaction, and the rules they
//! apply come from `rota_domain` (`settle`, `control`, `policy`; every reason text is a
//! `rota_domain::Reason`). Batched calls (submit, complete, logs) return one
//! result per item: one failing item never rolls back the others.
//!
//! # Layout
//! - [`records`]: what goes in and comes out (domain types only, never a driver's).
//! - [`error`]: [`StoreError`] and the `Result` alias.
//! - [`bus`]: the typed events the servers of one control plane tell each other, and the
//!   in-process transport.
//! - [`resources`]: declared resources (`rota apply`) as stored.
//! - [`secrets`]: secrets as stored: sealed (encrypted) values, key names and sizes, and
//!   the fingerprint of the key-encryption key; never a plaintext value or the key.
//! - [`schedules`]: the fire times of schedules as recorded (at most one run per fire time).
//! - [`leader`]: which server runs the loops that must run once ([`leader::Leadership`]).
//! - [`private_file`]: files only their owner may read (0600): created so, tightened if wider.
//! - [`transfer`]: copying a whole control plane between backends (`rota migrate`).
//! - `conformance` (feature): the suite every backend must pass.

pub mod bus;
pub mod error;
pub mod leader;
pub mod private_file;
pub mod records;
pub mod resources;
pub mod schedules;
pub mod secrets;
pub mod transfer;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{ConflictKind, Result, StoreError};
pub use records::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, SessionId};
use std::time::Duration;

/// Durable state of the control plane. Object-safe; used as `Arc<dyn JobStore>`.
///
/// Time is always passed in (`now`) so tests and the sweeper control it. Durability: a
/// successful [`JobStore::submit_jobs`] is on disk (fsynced) before it returns; other
/// writes may be committed more cheaply because losing one only re-runs a step.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores new jobs (already validated). Per item: `created: false` with the existing id
    /// when the idempotency key is already known.
    async fn submit_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Submitted>>>;

    /// One job with its steps and attempts. `NotFound` if unknown.
    async fn get_job(&self, id: JobId) -> Result<JobRecord>;

    /// Jobs matching the filter, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>>;

    /// Jobs ended and started per minute since `since` (of `namespace`; `None`: every
    /// namespace), read from the store so that it is the whole fleet's, whichever server asks.
    async fn throughput(&self, since: DateTime<Utc>, namespace: Option<&str>) -> Result<Throughput>;

    /// Cancels (or revokes) a job: steps not started end at once; running attempts are
    /// flagged so heartbeats tell their worker to stop, and are returned so the caller can
    /// push a stop command. A job already terminal is returned unchanged (`changed: false`).
    async fn stop_job(&self, id: JobId, kind: StopKind, now: DateTime<Utc>) -> Result<StopOutcome>;

    /// Puts a failed, cancelled or revoked job back in the queue: its unfinished steps run
    /// again (succeeded steps are kept). `Conflict` if the job has not ended.
    async fn retry_job(&self, id: JobId, now: DateTime<Utc>) -> Result<JobRow>;

    /// Registers a worker session. A live session with the same name is superseded: it goes
    /// offline and its running attempts are lost (and follow their step's `on_lost`).
    /// A live session (not offline, heard from within `reg.stale_after`) of the same name
    /// held by another instance — both have an instance id and the ids or the hosts differ
    /// — is not superseded unless `reg.replace`: the registration fails with
    /// [`StoreError::NameHeld`] and nothing is written. A session without an instance id
    /// (an older worker) supersedes and is superseded as before.
    async fn register_worker(&self, reg: WorkerRegistration, now: DateTime<Utc>) -> Result<Registered>;

    /// A session leaves cleanly; any attempts it still holds are lost.
    async fn unregister_worker(&self, session: SessionId, now: DateTime<Utc>) -> Result<Vec<LostAttempt>>;

    /// Sets the queues a live session claims from (a declared pool changed them); false
    /// when the session is unknown or offline. Claims after it use the new queues.
    async fn set_worker_queues(&self, session: SessionId, queues: Vec<String>) -> Result<bool>;

    /// The live (not offline) session whose credential hashes to `token_hash`.
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<WorkerRecord>>;

    /// Ends every live session of worker `name` in `namespace` as forgotten by an operator
    /// (`rota worker forget`): they go offline, their attempts are lost (cause
    /// `LostCause::Forgotten`), and their credentials are answered "forgotten" from now on
    /// ([`JobStore::is_forgotten`]). With `block` the name may not register again until
    /// [`JobStore::unblock_worker`] (a registration is then refused with
    /// `ConflictKind::Blocked`); without it, a registration with the join token is welcome.
    /// Durable before it returns.
    async fn forget_worker(
        &self,
        namespace: &str,
        name: &str,
        block: bool,
        now: DateTime<Utc>,
    ) -> Result<Forgotten>;

    /// Lets a blocked name register again; false if it was not blocked.
    async fn unblock_worker(&self, namespace: &str, name: &str) -> Result<bool>;

    /// Whether `token_hash` is the credential of a session an operator forgot (asked only
    /// for a credential that matched no live session, to say why it is refused).
    async fn is_forgotten(&self, token_hash: &str) -> Result<bool>;

    /// Every worker's latest session, live ones first.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Renews the leases of the attempts a session holds; says which it must stop.
    async fn heartbeat(&self, hb: Heartbeat, now: DateTime<Utc>, ttl: Duration) -> Result<HeartbeatOutcome>;

    /// Claims up to `max` ready steps for the session (priority, then age), creating
    /// attempts already marked running with a lease of `ttl`.
    async fn claim(
        &self,
        session: SessionId,
        max: u32,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<ClaimedAttempt>>;

    /// Submits `jobs` as [`JobStore::submit_jobs`] does, then claims for each of `claimers`
    /// as [`JobStore::claim`] does, in one durable commit where the backend can. This is how
    /// a claim long-poll parked on the server gets the step a submit made claimable without
    /// a second transaction. One claim result per claimer, in order; a claimer's error
    /// (say, an unknown session) leaves the submits and the other claims standing.
    /// The default runs the calls one after another.
    async fn submit_and_claim(
        &self,
        jobs: Vec<NewJob>,
        claimers: Vec<Claimer>,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<SubmittedAndClaimed> {
        let submitted = self.submit_jobs(jobs).await?;
        let mut claimed = Vec::with_capacity(claimers.len());
        for c in claimers {
            claimed.push(self.claim(c.session, c.max, now, ttl).await);
        }
        Ok(SubmittedAndClaimed { submitted, claimed })
    }

    /// Records the pid of a running attempt. `Conflict` if the session does not hold it.
    async fn record_start(&self, session: SessionId, attempt: AttemptId, pid: u32) -> Result<()>;

    /// Records finished attempts (per item: `Conflict` if not held or superseded; a repeat
    /// from the holder returns the recorded result with `repeated: true`). Applies the
    /// step's policy (retry, fail, ready dependents) and the job's resulting state.
    async fn complete(
        &self,
        items: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<CompletionRecorded>>>;

    /// Records `items` as [`JobStore::complete`] does, then claims for `claimer` as
    /// [`JobStore::claim`] does, in one transaction where the backend can: a worker's
    /// completion that also fills the slots it frees costs one commit, and the claim sees
    /// what the completions readied. A claim error (say, an unknown session) leaves the
    /// completions standing. The default runs the two calls one after the other.
    async fn complete_and_claim(
        &self,
        items: Vec<Completion>,
        claimer: Claimer,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<CompletedAndClaimed> {
        let completed = self.complete(items, now).await?;
        let claimed = self.claim(claimer.session, claimer.max, now, ttl).await;
        Ok(CompletedAndClaimed { completed, claimed })
    }

    /// Appends log chunks (per item: `Conflict` if the session does not hold the attempt).
    /// Chunks already stored (same attempt, stream, seq) are ignored. Past the step's log
    /// cap, the oldest chunks of the attempt are dropped and the cut is recorded. Past the
    /// total log quota, the oldest finished jobs' logs are deleted first, then new chunks
    /// are refused; both are recorded per attempt ([`LogCut`]).
    async fn append_logs(&self, items: Vec<LogAppend>) -> Result<Vec<Result<()>>>;

    /// A page of a job's log output after a cursor.
    async fn read_logs(&self, q: &LogQuery) -> Result<LogPage>;

    /// The cursor after which the last `max_bytes` (about: whole chunks) of a job's output
    /// (of one step, if given) follow: read from it, a page is the output's tail. 0 when it
    /// all fits.
    async fn log_tail_cursor(&self, job_id: JobId, step: Option<&str>, max_bytes: u64) -> Result<i64>;

    /// Marks attempts whose lease ended before `now` lost and applies each step's
    /// `on_lost`. Returns what it changed.
    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<LostAttempt>>;

    /// Sets every running attempt's lease to `now + ttl` (server start: workers get a full
    /// TTL to reconnect). Returns how many.
    async fn extend_live_leases(&self, now: DateTime<Utc>, ttl: Duration) -> Result<u64>;

    /// Fails jobs whose deadline passed: steps not started are skipped, running attempts
    /// are flagged to stop and returned.
    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<Vec<RunningAttempt>>;

    /// Deletes jobs (and their logs) that ended before `before`. Returns how many.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Records revokes durably (serialized with claims: a revoked job is never claimed
    /// again, by any worker, across restarts). A live job ends `revoked`: steps not started
    /// are revoked; with `terminate` its running attempts are flagged and returned,
    /// otherwise they finish but nothing after them starts. A job id that does not exist
    /// is `NotFound` (ids are issued at submit) and nothing is stored. Per item results.
    async fn revoke_jobs(
        &self,
        reqs: Vec<RevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<RevokeOutcome>>>;

    /// Records revokes of idempotency keys durably: a job already submitted with the key is
    /// revoked as by [`JobStore::revoke_jobs`]; one submitted later with it ends `revoked`
    /// at once, until the revoke expires. Per item results.
    async fn revoke_keys(
        &self,
        reqs: Vec<KeyRevokeRequest>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<KeyRevokeOutcome>>>;

    /// Revokes still in force at `now`, newest first.
    async fn list_revokes(&self, now: DateTime<Utc>) -> Result<Vec<RevokeRecord>>;

    /// Key revokes still in force at `now`, newest first.
    async fn list_key_revokes(&self, now: DateTime<Utc>) -> Result<Vec<KeyRevokeRecord>>;

    /// Forgets revokes (of jobs and of keys) that expired before `now`. Returns how many.
    async fn prune_revokes(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Pauses (`true`) or resumes a queue, durably: no step of a paused queue is claimed.
    /// Returns whether the state changed.
    async fn set_queue_paused(
        &self,
        namespace: &str,
        queue: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Every queue that has live steps or is paused, of `namespace` (`None`: of every
    /// namespace), by namespace and name.
    async fn queue_stats(&self, namespace: Option<&str>) -> Result<Vec<QueueStats>>;

    /// Use of the total log quota. Cheap (no I/O): safe for health checks and metrics.
    fn log_usage(&self) -> LogUsage;

    /// The store's clock. Times several servers must agree on (lease expiry, deadlines,
    /// fire times) are read here, not from the server's own clock. Cheap (no I/O): a
    /// backend whose clock lives elsewhere keeps its measured offset. SQLite's store is
    /// the server's own file, so its clock is the server's.
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Re-reads what this server keeps of a store other servers write too, so its cheap
    /// answers ([`JobStore::now`], [`JobStore::log_usage`] and the log quota's checks) do not
    /// drift: every server calls it every few seconds. A store only this server writes
    /// has nothing to re-read.
    async fn refresh_shared_views(&self) -> Result<()> {
        Ok(())
    }
    /// The admin and join token hashes (SHA-256 hex) the store holds, shared by every
    /// server of the control plane; `None` for a kind it holds none of.
    async fn credential_hashes(&self) -> Result<CredentialHashes>;

    /// Stores each hash `proposed` holds for a kind the store holds none of yet, durably,
    /// and returns what the store holds afterwards. A kind already held keeps its hash:
    /// insert-if-absent, atomic per kind, so servers starting together over one store
    /// agree on one token (the first writer's). An empty proposed hash is `Invalid` and
    /// nothing is written.
    async fn init_credentials(
        &self,
        proposed: &CredentialHashes,
        now: DateTime<Utc>,
    ) -> Result<CredentialHashes>;

    /// Replaces the hash of `kind` (an explicit rotation; stored if there was none),
    /// durably. Servers that cached the old hash accept the old token until they reload.
    /// An empty hash is `Invalid` and nothing is written.
    async fn rotate_credential(&self, kind: CredentialKind, hash: &str, now: DateTime<Utc>) -> Result<()>;

    /// Replaces the hash of `kind` like [`JobStore::rotate_credential`], keeping the
    /// replaced one as [`PreviousCredential`] until `rotation.until` (with the sealed new
    /// token, if given). A store holding no hash of `kind` just stores the new one. A plain
    /// rotation later drops the kept one.
    async fn rotate_credential_with_grace(
        &self,
        kind: CredentialKind,
        rotation: &GraceRotation,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Creates or updates every resource of `writes` in one transaction (all or nothing):
    /// per item, what `rota_domain::resource::apply` decides (the generation rises only
    /// when the spec text differs; the status is kept). A batch naming one resource twice
    /// is `Invalid` and nothing is written.
    async fn apply_resources(
        &self,
        writes: Vec<resources::ResourceWrite>,
        now: DateTime<Utc>,
    ) -> Result<Vec<resources::AppliedResource>>;

    /// Deletes the named resources in one transaction; per key, whether it existed.
    async fn delete_resources(&self, keys: Vec<resources::ResourceKey>) -> Result<Vec<bool>>;

    /// One resource, if it exists.
    async fn get_resource(&self, key: &resources::ResourceKey) -> Result<Option<resources::ResourceRecord>>;

    /// One page of the resources of `kind`: at most `limit` of them, by name in byte order
    /// (C collation on every backend, so a page's last name is a cursor that means the same
    /// everywhere), only names after `after` when given. An empty page is the end.
    async fn list_resources(
        &self,
        kind: rota_domain::resource::Kind,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<resources::ResourceRecord>>;

    /// Records what a controller observed of a resource at `generation`; ignored (returns
    /// false) when the resource is gone or its generation moved on meanwhile.
    async fn set_resource_status(
        &self,
        key: &resources::ResourceKey,
        generation: u64,
        status: &rota_domain::resource::Status,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Records fire times in one transaction (all or nothing), each at most once: a fire
    /// time already recorded keeps its record, which is returned (`created: false`) and
    /// nothing else is written for it; a new `Run` stores its job in the same transaction
    /// (an existing job with the same idempotency key is the one recorded). Two callers
    /// recording one fire time at once get the same record. A batch naming a fire twice,
    /// or a run whose job lacks the fire's key ([`schedules::fire_key`]), is `Invalid`.
    async fn record_fires(
        &self,
        fires: Vec<schedules::NewFire>,
        now: DateTime<Utc>,
    ) -> Result<Vec<schedules::FireRecord>>;

    /// The recorded fires of `schedule` that `filter` admits, newest fire time first, at
    /// most `limit`.
    async fn list_fires(
        &self,
        namespace: &str,
        schedule: &str,
        filter: schedules::FireFilter,
        limit: u32,
    ) -> Result<Vec<schedules::FireRecord>>;

    /// Deletes fires recorded before `before`, except each schedule's newest (the controller
    /// counts due fire times from it), in chunks; returns how many went.
    async fn prune_fires(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The fingerprint of the key-encryption key the store's secrets are sealed with; `None`
    /// before any server stored one.
    async fn secret_key_fingerprint(&self) -> Result<Option<String>>;

    /// Stores `fingerprint` if the store holds none yet (insert-if-absent, durably: servers
    /// starting together agree on the first writer's) and returns the one held afterwards.
    /// An empty fingerprint is `Invalid`.
    async fn init_secret_key(&self, fingerprint: &str, now: DateTime<Utc>) -> Result<String>;

    /// Creates or replaces one secret in `write.namespace`, durably. What changed is decided
    /// as for resources: a new secret is `Created` at generation 1; new sealed values raise
    /// the generation (`Configured`); new labels alone are `Configured` at the same
    /// generation; nothing new is `Unchanged` (nothing written). A write sealed under
    /// another key than the store holds is `Conflict(SecretKey)` and nothing is written.
    async fn put_secret(
        &self,
        write: secrets::SecretWrite,
        now: DateTime<Utc>,
    ) -> Result<rota_domain::resource::Applied>;

    /// One secret of `namespace`, if it exists.
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<secrets::SecretRecord>>;

    /// The secrets of `namespace`, by name (byte order).
    async fn list_secrets(&self, namespace: &str) -> Result<Vec<secrets::SecretRecord>>;

    /// Deletes one secret of `namespace`; whether it existed.
    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool>;

    /// Every secret of every namespace, for a key rotation.
    async fn all_secrets(&self) -> Result<Vec<secrets::SecretRecord>>;

    /// Re-seals every secret under a new key in one durable transaction: the store must
    /// hold `from` and exactly the secrets of `resealed` (same namespace, name and
    /// generation; else `Conflict(SecretKey)` and nothing is written); each gets its new
    /// sealed bytes and `to`, and `to` becomes the key held. Generations do not change.
    async fn reseal_secrets(
        &self,
        from: &str,
        to: &str,
        resealed: Vec<secrets::SecretRecord>,
        now: DateTime<Utc>,
    ) -> Result<()>;
}
