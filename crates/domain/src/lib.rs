//! rota's domain: jobs, steps, attempts and the rules that move them between states.
//!
//! Pure: no I/O, no async runtime, no clock. Time is passed in as `now`, randomness (retry
//! jitter) as a number in `[0, 1)`. Storage, HTTP and processes live in other crates.
//!
//! # Layout
//! - [`ids`]: newtype identifiers (jobs, attempts = fencing ids, worker sessions).
//! - [`spec`]: the job document users submit, and its validation.
//! - [`limits`]: every size limit of the input (server, OpenAPI document and worker agree).
//! - [`state`]: job/step/attempt states and terminal reasons.
//! - [`policy`]: what happens after an attempt ends (retry, fail, succeed) and the job's
//!   resulting state.
//! - [`settle`]: every change an ended attempt makes to its step and job (stop overrides,
//!   DAG readiness, skipping), as a plan the store writes.
//! - [`control`]: whole-job decisions: cancel, revoke, deadline, retry.
//! - [`reason`]: every reason text users see, rendered in one place.
//! - [`units`]: durations and byte sizes as written in job documents and flags.
//! - [`resource`]: declared resources (`rota apply`): names, labels, generations, conditions.
//! - [`workflow`]: the `Workflow` resource: inputs, outputs and the job a run makes.
//! - [`hostconfig`]: the `WorkerConfig` resource: env, files, setup and projects a
//!   matching worker sets up on its host; validation and how several combine.
//! - [`pool`]: the `WorkerPool` resource: selectors, which pool is in force for a worker,
//!   what a running worker can change live.
//! - [`namespace`]: the namespace name rule and `default`.
//! - [`secret`]: secret references (`{secret: NAME/KEY}`), env values that may be one, and
//!   the rules of secret names, keys and values.
//! - [`schedule`]: the `Schedule` resource: cron and zone, fire times, overlap and catch-up.
//! - [`settings`]: worker and server settings: what flags parse into, what a background
//!   instance saves, what a worker pool overlays; the command lines derived from them.

pub mod control;
pub mod hostconfig;
pub mod ids;
pub mod limits;
pub mod namespace;
pub mod policy;
pub mod pool;
pub mod reason;
pub mod resource;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod settle;
pub mod spec;
pub mod state;
pub mod units;
pub mod workflow;

pub use control::{
    Ending, JobEnd, Requeue, RetryRefused, StepReset, StepsEnd, StopCause, end_job, retry_job,
};
pub use ids::{AttemptId, BadJobId, JobId, SessionId};
pub use policy::{StepDecision, decide_after_attempt, job_state_from_steps, retry_delay};
pub use reason::{LostCause, Reason};
pub use settle::{Ended, JobChange, SettleError, Settlement, StepChange, StoredStep, settle};
pub use spec::{Backoff, JobSpec, OnLost, RetryPolicy, SpecError, StepSpec, Target};
pub use state::{AttemptOutcome, AttemptStatus, JobState, StepState, Stream};

/// Major version of the worker protocol spoken by this build. Registration carries it and
/// the server refuses another major, naming both versions. Sent as `protocolVersion` (an
/// integer, as every release has sent it) so older servers and workers still understand it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Minor version of the worker protocol: additions a peer of the same major may ignore
/// (the protocol tolerates fields it does not know). A different minor is never refused.
/// Minor 2: a batch completion may ask the server to claim for the slots it frees
/// (`CompleteBatchRequest::claim`); a worker asks only a server of minor 2 or later.
pub const PROTOCOL_MINOR: u32 = 2;
/// The first minor whose server claims for a completion's freed slots.
pub const MINOR_CLAIM_ON_COMPLETE: u32 = 2;
