//! Every reason text a user sees on a job, a step or an attempt, rendered in one place.
//!
//! Backends store the rendered text (the `reason` columns), so rows written by older builds
//! read the same and no migration is needed; nothing parses it back. This module must not
//! decide which reason applies: [`crate::policy`], [`crate::settle`] and [`crate::control`]
//! do. A test (`tests/reasons_only_here.rs`) fails if a backend's source spells one.

use crate::control::StopCause;
use crate::state::{AttemptOutcome, JobState};
use std::fmt;

/// Why a job, a step or an attempt is where it is, as shown to users.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// How an attempt ended; also kept on its step while the step waits for a retry:
    /// `exit code 3`, `killed by signal 9`, `timeout`, `lost: lease expired`.
    Attempt(AttemptOutcome),
    /// The step's last allowed attempt ended so: `exit code 1 (after 3 attempts)`.
    AfterAttempts(AttemptOutcome, u32),
    /// A lost attempt of a step with `on_lost: fail`: `lost: lease expired (on_lost: fail)`.
    LostFails(AttemptOutcome),
    /// The step would run again, but the named step failed for good:
    /// `timeout (not retried: step 'b' failed)`.
    NotRetried(AttemptOutcome, String),
    /// A stop ended the step or the job: `cancelled by user`, `revoked by operator`,
    /// `deadline passed`, `stopped: attempt no longer held`.
    Stopped(StopCause),
    /// The job ended while the step ran and its attempt was left to finish (a revoke
    /// without `--terminate`).
    StoppedWhileRunning(StopCause),
    /// Not started because the named step failed: `not run: step 'a' failed`.
    NotRunAfterFailure(String),
    /// Not started because the named step's worker cancelled it.
    NotRunAfterCancel(String),
    /// The step's worker reported it cancelled without anything asking for it.
    CancelledByWorker,
    /// The job: every one of its `steps` steps succeeded.
    Succeeded {
        /// How many steps the job has.
        steps: usize,
    },
    /// The job, named after the step that decided its end: `step 'b': exit code 1`.
    Step {
        /// The deciding step.
        step: String,
        /// That step's reason, as shown on it.
        reason: String,
    },
    /// The job ended in this state with no step to name it after.
    Ended(JobState),
    /// The step wrote a value holding one of its secret values to `$ROTA_OUTPUT`, which
    /// would pass it on to other steps in plain text: the attempt fails, naming the key.
    SecretInOutput {
        /// The `$ROTA_OUTPUT` key whose value holds it.
        key: String,
    },
    /// A secret the step refers to could not be given to it when it was claimed (deleted,
    /// or a key it no longer has): the attempt fails, naming the reference and the problem.
    SecretUnavailable {
        /// `NAME/KEY`.
        reference: String,
        /// What is wrong (never a value).
        problem: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attempt(o) => write_outcome(f, o),
            Self::AfterAttempts(o, n) => {
                write_outcome(f, o)?;
                write!(f, " (after {n} attempts)")
            }
            Self::LostFails(o) => {
                write_outcome(f, o)?;
                f.write_str(" (on_lost: fail)")
            }
            Self::NotRetried(o, step) => {
                write_outcome(f, o)?;
                write!(f, " (not retried: step '{step}' failed)")
            }
            Self::Stopped(cause) => f.write_str(stopped(*cause)),
            Self::StoppedWhileRunning(cause) => {
                write!(f, "{} while it ran (its attempt was left to finish)", stopped(*cause))
            }
            Self::NotRunAfterFailure(step) => write!(f, "not run: step '{step}' failed"),
            Self::NotRunAfterCancel(step) => write!(f, "not run: step '{step}' was cancelled"),
            Self::CancelledByWorker => f.write_str("cancelled by its worker"),
            Self::Succeeded { steps: 1 } => f.write_str("the step succeeded"),
            Self::Succeeded { steps } => write!(f, "all {steps} steps succeeded"),
            Self::Step { step, reason } => write!(f, "step '{step}': {reason}"),
            Self::Ended(state) => f.write_str(state.as_str()),
            Self::SecretInOutput { key } => write!(
                f,
                "$ROTA_OUTPUT key '{key}' holds a secret value given to the step; secret values are \
                 never passed on as outputs (refer to the secret in the step that needs it)"
            ),
            Self::SecretUnavailable { reference, problem } => {
                write!(f, "secret '{reference}' cannot be given to the step: {problem}")
            }
        }
    }
}

fn stopped(cause: StopCause) -> &'static str {
    match cause {
        StopCause::Cancelled => "cancelled by user",
        StopCause::Revoked => "revoked by operator",
        StopCause::Deadline => "deadline passed",
        StopCause::NotHeld => "stopped: attempt no longer held",
    }
}

fn write_outcome(f: &mut fmt::Formatter<'_>, o: &AttemptOutcome) -> fmt::Result {
    match o {
        AttemptOutcome::Succeeded => f.write_str("exit code 0"),
        AttemptOutcome::Failed { why: Some(w), .. } => f.write_str(w),
        AttemptOutcome::Failed { exit_code: Some(c), .. } => write!(f, "exit code {c}"),
        AttemptOutcome::Failed { signal: Some(s), .. } => write!(f, "killed by signal {s}"),
        AttemptOutcome::Failed { .. } => f.write_str("failed"),
        AttemptOutcome::Timeout => f.write_str("timeout"),
        AttemptOutcome::Memory => f.write_str("memory"),
        AttemptOutcome::Cancelled => f.write_str("cancelled"),
        AttemptOutcome::Lost { why } => write!(f, "lost: {why}"),
    }
}

/// Renders an outcome as a reason without cloning it.
struct OutcomeText<'a>(&'a AttemptOutcome);

impl fmt::Display for OutcomeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_outcome(f, self.0)
    }
}

impl AttemptOutcome {
    /// The reason shown to users, e.g. `exit code 3`, `timeout`, `killed by signal 9`
    /// (the text of [`Reason::Attempt`]).
    pub fn reason(&self) -> String {
        OutcomeText(self).to_string()
    }
}

/// Why the control plane marked an attempt lost (its worker's own reasons for a `lost`
/// report travel in the report). Rendered as the `why` of [`AttemptOutcome::Lost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostCause {
    /// The worker stopped renewing the attempt's lease.
    LeaseExpired,
    /// The session holding it unregistered.
    SessionEnded,
    /// A new session of the same worker (a restart) took over.
    Superseded {
        /// The worker's name.
        name: String,
    },
    /// Another instance took the worker's name over with `--replace`.
    Replaced {
        /// The worker's name.
        name: String,
        /// The instance that took it, if it said.
        instance: Option<String>,
        /// The host it runs on.
        host: String,
    },
    /// An operator forgot the worker holding it (`rota worker forget`): its session and
    /// credential ended at once.
    Forgotten {
        /// The worker's name.
        name: String,
    },
    /// Its worker reported it cancelled although nothing asked it to stop (e.g. the worker
    /// shut down hard): it could not run to the end, which is what `lost` means.
    StoppedUnasked,
}

impl fmt::Display for LostCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeaseExpired => f.write_str("lease expired"),
            Self::SessionEnded => f.write_str("worker session ended"),
            Self::Superseded { name } => write!(f, "superseded by a new session of {name}"),
            Self::Replaced { name, instance, host } => write!(
                f,
                "superseded: worker name {name} taken over by instance {} on host {host} (--replace)",
                instance.as_deref().unwrap_or("?")
            ),
            Self::Forgotten { name } => write!(f, "worker {name} was forgotten by an operator"),
            Self::StoppedUnasked => f.write_str("stopped by its worker without a cancel"),
        }
    }
}

impl LostCause {
    /// The outcome recorded for an attempt lost so.
    pub fn outcome(&self) -> AttemptOutcome {
        AttemptOutcome::Lost { why: self.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Reason) -> String {
        r.to_string()
    }

    #[test]
    fn attempt_texts() {
        let exit = |c| AttemptOutcome::Failed { exit_code: Some(c), signal: None, why: None };
        assert_eq!(text(Reason::Attempt(exit(3))), "exit code 3");
        assert_eq!(exit(3).reason(), "exit code 3");
        let signal = AttemptOutcome::Failed { exit_code: None, signal: Some(9), why: None };
        assert_eq!(signal.reason(), "killed by signal 9");
        let why =
            AttemptOutcome::Failed { exit_code: Some(1), signal: None, why: Some("env too big".into()) };
        assert_eq!(why.reason(), "env too big", "the worker's why wins over the exit code");
        assert_eq!(AttemptOutcome::Succeeded.reason(), "exit code 0");
        assert_eq!(AttemptOutcome::Timeout.reason(), "timeout");
        assert_eq!(LostCause::LeaseExpired.outcome().reason(), "lost: lease expired");
        assert_eq!(text(Reason::AfterAttempts(exit(1), 3)), "exit code 1 (after 3 attempts)");
        assert_eq!(
            text(Reason::LostFails(LostCause::SessionEnded.outcome())),
            "lost: worker session ended (on_lost: fail)"
        );
        assert_eq!(
            text(Reason::NotRetried(AttemptOutcome::Timeout, "b".into())),
            "timeout (not retried: step 'b' failed)"
        );
    }

    #[test]
    fn stop_and_job_texts() {
        assert_eq!(text(Reason::Stopped(StopCause::Cancelled)), "cancelled by user");
        assert_eq!(text(Reason::Stopped(StopCause::Revoked)), "revoked by operator");
        assert_eq!(text(Reason::Stopped(StopCause::Deadline)), "deadline passed");
        assert_eq!(text(Reason::Stopped(StopCause::NotHeld)), "stopped: attempt no longer held");
        assert_eq!(
            text(Reason::StoppedWhileRunning(StopCause::Revoked)),
            "revoked by operator while it ran (its attempt was left to finish)"
        );
        assert_eq!(text(Reason::NotRunAfterFailure("a".into())), "not run: step 'a' failed");
        assert_eq!(text(Reason::NotRunAfterCancel("a".into())), "not run: step 'a' was cancelled");
        assert_eq!(text(Reason::Succeeded { steps: 1 }), "the step succeeded");
        assert_eq!(text(Reason::Succeeded { steps: 4 }), "all 4 steps succeeded");
        let step = Reason::Step { step: "b".into(), reason: "exit code 2".into() };
        assert_eq!(text(step), "step 'b': exit code 2");
        assert_eq!(text(Reason::Ended(JobState::Failed)), "failed");
        let out = text(Reason::SecretInOutput { key: "TOKEN".into() });
        assert!(out.starts_with("$ROTA_OUTPUT key 'TOKEN' holds a secret value"), "{out}");
        assert_eq!(
            text(Reason::SecretUnavailable { reference: "d/t".into(), problem: "no such secret".into() }),
            "secret 'd/t' cannot be given to the step: no such secret"
        );
    }

    #[test]
    fn lost_causes() {
        let replaced = LostCause::Replaced { name: "vm".into(), instance: None, host: "h1".into() };
        assert_eq!(
            replaced.to_string(),
            "superseded: worker name vm taken over by instance ? on host h1 (--replace)"
        );
        assert_eq!(
            LostCause::Superseded { name: "vm".into() }.to_string(),
            "superseded by a new session of vm"
        );
    }
}
