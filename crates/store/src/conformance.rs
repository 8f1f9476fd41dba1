//! The conformance suite every [`JobStore`] backend must pass, run from
//! `crates/store-*/tests/conformance.rs`. Each scenario gets a fresh database from the
//! backend's [`Database`] harness, a store open on it, and panics naming what differed. Time
//! is passed in explicitly, so nothing sleeps. It tests behaviour through the trait only: no
//! backend internals, no driver types.
//!
//! This root owns the harness ([`Database`], [`Fresh`]), the scenario list and [`run_all`];
//! the scenarios live in one module per concern, their shared helpers in `fixtures.rs`.
//! A scenario that needs more than a store (closing and reopening its database) takes
//! [`Fresh`]; every other one takes the store alone.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod claims;
mod completion;
mod control;
mod credentials;
mod durability;
mod fixtures;
mod jobs;
mod leases;
mod logs;
mod namespaces;
mod prune;
mod resources;
mod revokes;
mod schedules;
mod secrets;
mod workers;

pub use credentials::previous_release_rotates_and_forgets;
pub use fixtures::{WorkerSpec, registration};
pub use namespaces::before_namespaces_in_default;

use crate::JobStore;
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One scenario's database, provided by the backend under test: the hooks the durability
/// scenarios need to close a store and open the same data again.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Opens a store on this database; the first open creates it empty. The suite keeps at
    /// most one store open on a database at a time.
    async fn open(&self) -> Arc<dyn JobStore>;

    /// Closes a store opened by [`Database::open`] cleanly: returns once every write it
    /// accepted is finished and the database is released. The suite passes the last handle.
    /// The default drops it (on a blocking thread: a backend may join its writer there),
    /// for a backend whose drop finishes its writes, like SQLite.
    async fn close(&self, store: Arc<dyn JobStore>) {
        tokio::task::spawn_blocking(move || drop(store)).await.expect("dropping the store");
    }

    /// The store goes away without a clean shutdown, possibly with writes in flight; the
    /// suite then opens the database again. A backend that can simulate a crash more
    /// faithfully (killing its connections) overrides this; the default closes the store.
    async fn crash(&self, store: Arc<dyn JobStore>) {
        self.close(store).await;
    }
}

/// What a scenario is given: a store open on a new, empty database, and that database.
pub struct Fresh {
    /// The open store.
    pub store: Arc<dyn JobStore>,
    /// The database it is open on.
    pub db: Arc<dyn Database>,
}

/// A scenario that needs only the store takes it alone.
impl From<Fresh> for Arc<dyn JobStore> {
    fn from(fresh: Fresh) -> Self {
        fresh.store
    }
}

/// A scenario's future.
pub type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named scenario: runs against a fresh database and panics on failure.
pub struct Scenario {
    /// Name (`module::scenario`), as reported on failure.
    pub name: &'static str,
    /// The scenario.
    pub run: fn(Fresh) -> ScenarioFuture,
}

/// Lists scenarios by path; each takes [`Fresh`] or anything made from it (the store).
macro_rules! scenarios {
    ($($first:ident $(:: $rest:ident)*),* $(,)?) => {
        /// Every scenario, in the order [`run_all`] runs them.
        pub const SCENARIOS: &[Scenario] = &[$(Scenario {
            name: concat!(stringify!($first) $(, "::", stringify!($rest))*),
            run: |fresh| Box::pin($first $(:: $rest)*(fresh.into())),
        }),*];
    };
}

scenarios![
    jobs::submit_and_idempotency,
    jobs::list_and_get,
    jobs::dag_readiness,
    jobs::throughput_per_minute,
    claims::claim_respects_queues,
    claims::claim_respects_targets,
    claims::claim_order_priority_age_and_max,
    claims::claim_only_when_active,
    claims::submit_and_claim_hands_out_in_one_call,
    claims::submit_and_claim_answers_a_bad_job_alone,
    claims::complete_and_claim_fills_the_freed_slot,
    completion::fencing,
    completion::retry_with_backoff,
    completion::no_retry_once_a_step_failed,
    completion::unasked_cancel_is_not_a_cancel,
    completion::late_results_keep_their_run_time,
    completion::outputs_reach_the_steps_that_need_them,
    leases::lease_expiry_retries_or_fails,
    leases::extend_live_leases,
    leases::heartbeat_renews_and_stops,
    revokes::durable_revokes,
    revokes::revoke_of_an_unknown_job_is_not_found,
    revokes::key_revokes_bind_later_jobs,
    revokes::revoke_without_terminate_lets_the_step_finish,
    control::paused_queues,
    control::cancel_queued_and_running,
    control::revoke_and_lost_stopped_attempt,
    control::deadline_expiry,
    control::retry_job,
    logs::logs_round_trip,
    logs::logs_dedupe,
    logs::logs_cap_keeps_tail,
    logs::logs_refused_when_not_held,
    workers::register_supersedes,
    workers::names_are_held_by_live_instances,
    workers::unregister_loses_attempts,
    workers::workers_listing,
    workers::queues_change_for_a_live_session,
    workers::forget_ends_sessions_and_blocks,
    prune::prune,
    durability::concurrent_submits_commit_even_when_one_fails,
    durability::submitted_jobs_survive_reopening,
    durability::writes_in_flight_when_the_store_goes_away,
    durability::twenty_megabytes_of_output_round_trip,
    credentials::credentials_are_stored_once,
    credentials::credentials_init_races_agree_on_one,
    credentials::credentials_rotate,
    credentials::credentials_rotate_with_grace,
    credentials::credentials_refuse_an_empty_hash,
    resources::resources_apply_and_generation,
    resources::resources_apply_is_all_or_nothing,
    resources::resources_delete_and_status,
    resources::resources_concurrent_applies_agree,
    resources::resources_list_in_pages,
    schedules::schedules_record_each_fire_once,
    schedules::schedules_racing_recorders_agree,
    namespaces::namespaces_keep_apart,
    secrets::secrets_store_and_generations,
    secrets::secrets_reseal_is_all_or_nothing,
    secrets::claims_carry_secret_references,
];

/// Runs every scenario, each on a new database from `fresh` with a store open on it, and
/// panics listing the ones that failed (each failure's own panic message is printed as it
/// happens).
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Database>>,
{
    let mut failed = Vec::new();
    for scenario in SCENARIOS {
        let db = fresh().await;
        let store = db.open().await;
        let given = Fresh { store, db: db.clone() };
        if let Err(e) = tokio::spawn((scenario.run)(given)).await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
                Err(e) => e.to_string(),
            };
            failed.push(format!("- {}: {msg}", scenario.name));
        }
    }
    assert!(failed.is_empty(), "{} conformance scenario(s) failed:\n{}", failed.len(), failed.join("\n"));
}
