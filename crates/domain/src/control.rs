//! Operator and clock decisions about whole jobs: ending one (cancel, revoke, deadline) and
//! putting an ended one back in the queue (`rota job retry`). Pure: the backend reads the
//! job's state (and, for a retry, its steps), calls these, and writes what they return.
//!
//! A job that ends ends its steps with it, running ones included (job and steps always
//! agree); running attempts are only flagged and end when their worker reports or their
//! lease expires, through [`crate::settle`].

use crate::ids::JobId;
use crate::reason::Reason;
use crate::settle::StoredStep;
use crate::spec::JobSpec;
use crate::state::{JobState, StepState};

/// Why a running attempt must stop (what heartbeats and control commands carry, and what
/// the store keeps on a flagged attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The job was cancelled.
    Cancelled,
    /// The job was revoked.
    Revoked,
    /// The job's deadline passed.
    Deadline,
    /// The session does not hold this attempt (lost, superseded, finished, unknown).
    NotHeld,
}

impl StopCause {
    /// The state of a step this stop ended while it ran (and of one whose attempt ends
    /// after it was flagged). A deadline fails it: the job failed.
    pub fn step_state(self) -> StepState {
        match self {
            Self::Cancelled | Self::NotHeld => StepState::Cancelled,
            Self::Revoked => StepState::Revoked,
            Self::Deadline => StepState::Failed,
        }
    }
}

/// How a live job is ended from outside its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// `rota job cancel`.
    Cancel,
    /// `rota worker revoke` (by job id or idempotency key, also on submit of a revoked one).
    Revoke,
    /// Its deadline passed.
    Deadline,
}

impl JobEnd {
    /// The cause its running attempts are flagged with.
    pub fn cause(self) -> StopCause {
        match self {
            Self::Cancel => StopCause::Cancelled,
            Self::Revoke => StopCause::Revoked,
            Self::Deadline => StopCause::Deadline,
        }
    }

    /// The state the job ends in.
    pub fn job_state(self) -> JobState {
        match self {
            Self::Cancel => JobState::Cancelled,
            Self::Revoke => JobState::Revoked,
            Self::Deadline => JobState::Failed,
        }
    }
}

/// A state and reason every step of a group takes (one bulk write in a backend).
#[derive(Clone, Debug, PartialEq)]
pub struct StepsEnd {
    /// Their new state.
    pub state: StepState,
    /// Their reason.
    pub reason: Reason,
}

/// What ending a job writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// The job's new state.
    pub state: JobState,
    /// The job's reason.
    pub reason: Reason,
    /// Every step still waiting or ready.
    pub pending: StepsEnd,
    /// Every step whose attempt still runs: it shows the job's end at once, while its
    /// attempt keeps its own record (it may still succeed if it was left to finish).
    pub running: StepsEnd,
    /// Running attempts are flagged with this cause and returned, so their workers are told
    /// to stop; `None`: they are left to finish (neither flagged nor returned), and nothing
    /// after them starts because the job has ended.
    pub flag: Option<StopCause>,
}

impl Ending {
    /// Whether the job's end time is recorded now: only when none of its attempts runs;
    /// otherwise settling the last one records it.
    pub fn finished_now(&self, attempts_running: bool) -> bool {
        !attempts_running
    }
}

/// Ends a job in state `current` the way `how` says, or `None` if it has ended already.
/// `stop_running: false` lets running attempts finish (a revoke without `--terminate`).
pub fn end_job(current: JobState, how: JobEnd, stop_running: bool) -> Option<Ending> {
    if current.is_terminal() {
        return None;
    }
    let cause = how.cause();
    let pending = match how {
        // Steps a deadline never started are skipped, not failed: they did nothing wrong.
        JobEnd::Deadline => StepsEnd { state: StepState::Skipped, reason: Reason::Stopped(cause) },
        _ => StepsEnd { state: cause.step_state(), reason: Reason::Stopped(cause) },
    };
    let running = StepsEnd {
        state: cause.step_state(),
        reason: if stop_running { Reason::Stopped(cause) } else { Reason::StoppedWhileRunning(cause) },
    };
    Some(Ending {
        state: how.job_state(),
        reason: Reason::Stopped(cause),
        pending,
        running,
        flag: stop_running.then_some(cause),
    })
}

/// Why `rota job retry` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    /// The job is live or succeeded.
    #[error("job {0} is {1}; only a failed, cancelled or revoked job can be retried")]
    NotRetriable(JobId, JobState),
    /// An attempt of the job still runs (it was flagged to stop and has not reported).
    #[error("job {0}: step '{1}' is still stopping; retry once it has ended")]
    StillStopping(JobId, String),
}

/// A step `rota job retry` puts back: by its position in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepReset {
    /// Index into the job's steps (document order).
    pub step: usize,
    /// `ready` if its needs all succeeded, else `waiting`. Its reason and retry time clear.
    pub state: StepState,
}

/// What `rota job retry` writes: every step that did not succeed is reset (succeeded ones
/// are kept), and the job goes back to `state` with no reason and no end time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// The job's new state.
    pub state: JobState,
    /// The steps that run again.
    pub steps: Vec<StepReset>,
}

/// Puts a failed, cancelled or revoked job back in the queue. `steps` are its stored steps
/// in document order; `stopping` names a step whose attempt still runs, if any.
pub fn retry_job(
    id: JobId,
    current: JobState,
    spec: &JobSpec,
    steps: &[StoredStep],
    stopping: Option<&str>,
) -> Result<Requeue, RetryRefused> {
    if !current.is_terminal() || current == JobState::Succeeded {
        return Err(RetryRefused::NotRetriable(id, current));
    }
    if let Some(step) = stopping {
        return Err(RetryRefused::StillStopping(id, step.to_string()));
    }
    let succeeded = |name: &str| steps.iter().any(|s| s.name == name && s.state == StepState::Succeeded);
    let resets = spec
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !succeeded(&s.name))
        .map(|(i, s)| {
            let needs_met = s.needs.iter().all(|n| succeeded(n));
            StepReset { step: i, state: if needs_met { StepState::Ready } else { StepState::Waiting } }
        })
        .collect();
    Ok(Requeue { state: JobState::Queued, steps: resets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StepSpec;

    fn stored(name: &str, state: StepState) -> StoredStep {
        StoredStep { name: name.into(), state, reason: None }
    }

    #[test]
    fn cancel_revoke_and_deadline_end_steps_their_way() {
        let c = end_job(JobState::Running, JobEnd::Cancel, true).unwrap();
        assert_eq!((c.state, c.reason.to_string()), (JobState::Cancelled, "cancelled by user".into()));
        assert_eq!(
            c.pending,
            StepsEnd { state: StepState::Cancelled, reason: Reason::Stopped(StopCause::Cancelled) }
        );
        assert_eq!(c.running.state, StepState::Cancelled);
        assert_eq!(c.flag, Some(StopCause::Cancelled));

        let r = end_job(JobState::Queued, JobEnd::Revoke, true).unwrap();
        assert_eq!(
            (r.state, r.pending.state, r.running.state),
            (JobState::Revoked, StepState::Revoked, StepState::Revoked)
        );
        assert_eq!(r.reason.to_string(), "revoked by operator");

        let d = end_job(JobState::Running, JobEnd::Deadline, true).unwrap();
        assert_eq!(d.state, JobState::Failed);
        assert_eq!(d.pending.state, StepState::Skipped, "steps a deadline never started did nothing wrong");
        assert_eq!(d.running.state, StepState::Failed);
        assert_eq!(d.pending.reason.to_string(), "deadline passed");
        assert_eq!(d.flag, Some(StopCause::Deadline));
    }

    #[test]
    fn a_revoke_without_terminate_leaves_attempts_to_finish() {
        let r = end_job(JobState::Running, JobEnd::Revoke, false).unwrap();
        assert_eq!(r.flag, None);
        assert_eq!(
            r.running.reason.to_string(),
            "revoked by operator while it ran (its attempt was left to finish)"
        );
        assert!(!r.finished_now(true), "the end waits for the last attempt");
        assert!(r.finished_now(false));
    }

    #[test]
    fn an_ended_job_is_not_ended_again() {
        for s in [JobState::Succeeded, JobState::Failed, JobState::Cancelled, JobState::Revoked] {
            assert_eq!(end_job(s, JobEnd::Cancel, true), None, "{s}");
        }
    }

    #[test]
    fn retry_resets_what_did_not_succeed() {
        let mut b = StepSpec::new("b", "true");
        b.needs = vec!["a".into()];
        let mut c = StepSpec::new("c", "true");
        c.needs = vec!["b".into()];
        let spec = JobSpec::new(vec![StepSpec::new("a", "true"), b, c]);
        let id = JobId::new();
        let steps = [
            stored("a", StepState::Succeeded),
            stored("b", StepState::Failed),
            stored("c", StepState::Skipped),
        ];
        let got = retry_job(id, JobState::Failed, &spec, &steps, None).unwrap();
        assert_eq!(got.state, JobState::Queued);
        assert_eq!(
            got.steps,
            vec![
                StepReset { step: 1, state: StepState::Ready },
                StepReset { step: 2, state: StepState::Waiting }
            ]
        );
        let none_ran = [
            stored("a", StepState::Cancelled),
            stored("b", StepState::Cancelled),
            stored("c", StepState::Cancelled),
        ];
        let got = retry_job(id, JobState::Cancelled, &spec, &none_ran, None).unwrap();
        assert_eq!(
            got.steps.iter().map(|r| r.state).collect::<Vec<_>>(),
            [StepState::Ready, StepState::Waiting, StepState::Waiting]
        );
    }

    #[test]
    fn retry_refusals() {
        let spec = JobSpec::new(vec![StepSpec::new("a", "true")]);
        let id = JobId::new();
        let steps = [stored("a", StepState::Succeeded)];
        for s in [JobState::Queued, JobState::Running, JobState::Succeeded] {
            let e = retry_job(id, s, &spec, &steps, None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("job {id} is {s}; only a failed, cancelled or revoked job can be retried")
            );
        }
        let e = retry_job(id, JobState::Cancelled, &spec, &[stored("a", StepState::Cancelled)], Some("a"))
            .unwrap_err();
        assert_eq!(e.to_string(), format!("job {id}: step 'a' is still stopping; retry once it has ended"));
    }
}
