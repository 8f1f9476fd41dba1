//! Fire times of schedules as the store keeps them (`schedule_fires`): one row per schedule
//! name and fire time, never two, with what became of it (`run` with the job it started,
//! `skipped`, `missed`). Recording a run stores its job in the same transaction, with the
//! idempotency key [`fire_key`], so a fire time starts at most one job even when two
//! leaders (a leader change, a restart) record it. Which fire times are due and what each
//! becomes is `rota_domain::schedule`'s and the server's controller's.

use crate::NewJob;
use chrono::{DateTime, SecondsFormat, Utc};
use rota_domain::JobId;
use rota_domain::schedule::FireOutcome;

/// The idempotency key of the job a schedule starts at a fire time:
/// `schedule/<name>/<fire time, RFC 3339 UTC>`.
pub fn fire_key(schedule: &str, fire_time: DateTime<Utc>) -> String {
    format!("schedule/{schedule}/{}", fire_time.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// What every [`fire_key`] of `schedule` starts with: listing a schedule's runs.
pub fn fire_key_prefix(schedule: &str) -> String {
    format!("schedule/{schedule}/")
}

/// A fire time to record.
#[derive(Clone, Debug)]
pub struct NewFire {
    /// The schedule's namespace (a run's job is in it too).
    pub namespace: String,
    /// The schedule's name.
    pub schedule: String,
    /// The fire time.
    pub fire_time: DateTime<Utc>,
    /// What it becomes: a `Run` carries its job (with the idempotency key [`fire_key`]).
    pub outcome: NewOutcome,
}

/// What a new fire time becomes.
#[derive(Clone, Debug)]
pub enum NewOutcome {
    /// Starts this job (stored in the same transaction as the fire).
    Run(Box<NewJob>),
    /// Skipped (`overlap: skip`).
    Skipped,
    /// Missed (beyond `catchup`).
    Missed,
}

impl NewOutcome {
    /// The outcome stored.
    pub fn outcome(&self) -> FireOutcome {
        match self {
            NewOutcome::Run(_) => FireOutcome::Run,
            NewOutcome::Skipped => FireOutcome::Skipped,
            NewOutcome::Missed => FireOutcome::Missed,
        }
    }
}

/// A recorded fire time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FireRecord {
    /// The schedule's namespace.
    pub namespace: String,
    /// The schedule's name.
    pub schedule: String,
    /// The fire time.
    pub fire_time: DateTime<Utc>,
    /// What became of it.
    pub outcome: FireOutcome,
    /// The job it started (outcome `run`).
    pub job_id: Option<JobId>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Whether this call recorded it (false: it was recorded before, as returned).
    pub created: bool,
}

/// Most fire rows one pruning statement deletes (a chunk keeps SQLite's writer responsive).
pub const PRUNE_CHUNK: u32 = 2000;

/// Which recorded fires a listing returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FireFilter {
    /// Every outcome.
    All,
    /// Only `run`.
    Runs,
    /// Only `skipped` and `missed`.
    NotRun,
}

impl FireFilter {
    /// Whether `outcome` passes.
    pub fn admits(self, outcome: FireOutcome) -> bool {
        match self {
            FireFilter::All => true,
            FireFilter::Runs => outcome == FireOutcome::Run,
            FireFilter::NotRun => outcome != FireOutcome::Run,
        }
    }

    /// `(runs, not run)`: the two flags the backends' queries take.
    pub fn flags(self) -> (bool, bool) {
        (self.admits(FireOutcome::Run), self.admits(FireOutcome::Missed))
    }
}

/// A batch is refused whole (`Invalid`) when it names one fire time twice, or a run whose
/// job does not carry the fire's key.
pub fn check_fires(fires: &[NewFire]) -> crate::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for f in fires {
        if !seen.insert((f.namespace.as_str(), f.schedule.as_str(), f.fire_time)) {
            return Err(crate::StoreError::Invalid(format!(
                "schedule {} fire time {} is named twice in one request",
                f.schedule, f.fire_time
            )));
        }
        if let NewOutcome::Run(job) = &f.outcome
            && job.spec.idempotency_key.as_deref() != Some(fire_key(&f.schedule, f.fire_time).as_str())
        {
            return Err(crate::StoreError::Invalid(format!(
                "the job of schedule {} at {} must carry the key {}",
                f.schedule,
                f.fire_time,
                fire_key(&f.schedule, f.fire_time)
            )));
        }
        if let NewOutcome::Run(job) = &f.outcome
            && job.spec.namespace != f.namespace
        {
            return Err(crate::StoreError::Invalid(format!(
                "the job of schedule {} at {} must be in the schedule's namespace '{}', not '{}'",
                f.schedule, f.fire_time, f.namespace, job.spec.namespace
            )));
        }
    }
    Ok(())
}
