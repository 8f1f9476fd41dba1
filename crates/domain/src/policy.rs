//! What happens after an attempt ends, and what a job's steps add up to.
//!
//! The store applies these decisions inside its transactions; keeping them here means both
//! backends (SQLite, PostgreSQL) follow one rulebook and it can be tested without a database.

use crate::reason::Reason;
use crate::spec::{Backoff, LOST_RETRY_FLOOR, OnLost, StepSpec};
use crate::state::{AttemptOutcome, JobState, StepState};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The step's fate after one of its attempts ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepDecision {
    /// The step is done and its dependents may start.
    Succeeded,
    /// Run it again, not before `run_after`.
    Retry {
        /// Earliest time the next attempt may be claimed.
        run_after: DateTime<Utc>,
        /// Why the previous attempt ended, kept on the step for display.
        reason: Reason,
    },
    /// The step failed for good; the job fails.
    Failed {
        /// Shown as the step's and the job's reason.
        reason: Reason,
    },
    /// The attempt was stopped on purpose (cancel/revoke); the job's own state says which.
    Stopped,
}

/// Delay before retry number `attempt` (1 = the first retry), with `jitter01` in `[0, 1)`.
pub fn retry_delay(b: &Backoff, attempt: u32, jitter01: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(64) as i32;
    let base = b.initial.as_secs_f64() * b.factor.powi(exp);
    let capped = base.min(b.max.as_secs_f64());
    // jitter01 maps to a factor in [1 - jitter, 1 + jitter).
    let j = 1.0 + b.jitter * (2.0 * jitter01.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((capped * j).max(0.0))
}

/// Decides what a finished attempt means for its step. `attempt_number` is 1-based.
pub fn decide_after_attempt(
    step: &StepSpec,
    attempt_number: u32,
    outcome: &AttemptOutcome,
    now: DateTime<Utc>,
    jitter01: f64,
) -> StepDecision {
    let limit = match outcome {
        AttemptOutcome::Succeeded => return StepDecision::Succeeded,
        AttemptOutcome::Cancelled => return StepDecision::Stopped,
        AttemptOutcome::Lost { .. } if step.on_lost == OnLost::Fail => {
            return StepDecision::Failed { reason: Reason::LostFails(outcome.clone()) };
        }
        AttemptOutcome::Lost { .. } => step.retry.max_attempts.max(LOST_RETRY_FLOOR),
        _ => step.retry.max_attempts,
    };
    if attempt_number < limit {
        let delay = retry_delay(&step.retry.backoff, attempt_number, jitter01);
        let run_after = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        StepDecision::Retry { run_after, reason: Reason::Attempt(outcome.clone()) }
    } else if limit > 1 {
        StepDecision::Failed { reason: Reason::AfterAttempts(outcome.clone(), attempt_number) }
    } else {
        StepDecision::Failed { reason: Reason::Attempt(outcome.clone()) }
    }
}

/// The job's state given its steps' states, or `None` while any step can still move on its
/// own (the job then stays `queued` or `running`). Cancellation and revocation are set
/// directly by the store and are not derived here.
pub fn job_state_from_steps(states: &[StepState]) -> Option<JobState> {
    if states.iter().any(|s| !s.is_terminal()) {
        return None;
    }
    if states.iter().all(|s| *s == StepState::Succeeded) {
        Some(JobState::Succeeded)
    } else if states.contains(&StepState::Revoked) {
        Some(JobState::Revoked)
    } else if states.contains(&StepState::Cancelled) && !states.contains(&StepState::Failed) {
        Some(JobState::Cancelled)
    } else {
        Some(JobState::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RetryPolicy;

    fn step(max: u32, on_lost: OnLost) -> StepSpec {
        let mut s = StepSpec::new("a", "true");
        s.retry = RetryPolicy { max_attempts: max, backoff: Backoff::default() };
        s.on_lost = on_lost;
        s
    }

    #[test]
    fn decisions() {
        let now = Utc::now();
        let fail = AttemptOutcome::Failed { exit_code: Some(1), signal: None, why: None };
        let lost = AttemptOutcome::Lost { why: "lease expired".into() };
        let table: Vec<(StepSpec, u32, AttemptOutcome, &str)> = vec![
            (step(1, OnLost::Retry), 1, AttemptOutcome::Succeeded, "succeeded"),
            (step(1, OnLost::Retry), 1, fail.clone(), "failed"),
            (step(3, OnLost::Retry), 2, fail.clone(), "retry"),
            (step(3, OnLost::Retry), 3, fail.clone(), "failed"),
            (step(1, OnLost::Retry), 1, lost.clone(), "retry"),
            (step(1, OnLost::Retry), 3, lost.clone(), "failed"),
            (step(5, OnLost::Fail), 1, lost.clone(), "failed"),
            (step(5, OnLost::Retry), 1, AttemptOutcome::Timeout, "retry"),
            (step(5, OnLost::Retry), 1, AttemptOutcome::Cancelled, "stopped"),
        ];
        for (s, n, o, want) in table {
            let got = match decide_after_attempt(&s, n, &o, now, 0.5) {
                StepDecision::Succeeded => "succeeded",
                StepDecision::Retry { run_after, .. } => {
                    assert!(run_after > now);
                    "retry"
                }
                StepDecision::Failed { .. } => "failed",
                StepDecision::Stopped => "stopped",
            };
            assert_eq!(got, want, "{n} {o:?}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.2,
        };
        assert_eq!(retry_delay(&b, 1, 0.5), Duration::from_secs(1));
        assert_eq!(retry_delay(&b, 3, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(&b, 30, 0.5), Duration::from_secs(10));
        assert!(retry_delay(&b, 1, 0.0) >= Duration::from_millis(799));
        assert!(retry_delay(&b, 1, 0.999) <= Duration::from_millis(1200));
    }

    #[test]
    fn job_states() {
        use StepState::*;
        assert_eq!(job_state_from_steps(&[Succeeded, Running]), None);
        assert_eq!(job_state_from_steps(&[Succeeded, Succeeded]), Some(JobState::Succeeded));
        assert_eq!(job_state_from_steps(&[Succeeded, Failed, Skipped]), Some(JobState::Failed));
        assert_eq!(job_state_from_steps(&[Cancelled, Skipped]), Some(JobState::Cancelled));
        assert_eq!(job_state_from_steps(&[Waiting, Skipped]), None, "a waiting step can still run");
        assert_eq!(job_state_from_steps(&[Revoked, Failed]), Some(JobState::Revoked), "a revoke wins");
        assert_eq!(
            job_state_from_steps(&[Cancelled, Failed]),
            Some(JobState::Failed),
            "a failure wins over a cancel"
        );
        assert_eq!(job_state_from_steps(&[Skipped]), Some(JobState::Failed), "a deadline skipped everything");
    }
}
