//! What an ended attempt does to its step and its job: [`settle`], a pure function from the
//! state a backend already reads in its transaction (the job's state, its document, its
//! steps as stored, the attempt's step, number, outcome and stop cause) to the changes it
//! writes. Backends apply a [`Settlement`] and decide nothing themselves.
//!
//! The rules, in order:
//! 1. An attempt of a job that already ended, whose step the end already gave a final
//!    state (cancel, revoke, deadline), is its own record only: step and job keep what they
//!    showed.
//! 2. An attempt stopped on purpose (flagged with a stop cause, or under a job that ended)
//!    ends its step the way the stop says instead of retrying. A success always counts.
//! 3. An attempt reported cancelled that nothing asked to stop counts as lost (`on_lost`).
//! 4. Otherwise [`decide_after_attempt`]: succeed (dependents whose needs all succeeded
//!    become ready), retry after a backoff, or fail.
//! 5. Once a step has failed for good nothing new starts: no retry of another step, and the
//!    steps not started yet are skipped.
//! 6. The job's state follows its steps ([`job_state_from_steps`]); an ended job is finished
//!    once none of its attempts runs.

use crate::control::StopCause;
use crate::policy::{StepDecision, decide_after_attempt, job_state_from_steps};
use crate::reason::{LostCause, Reason};
use crate::spec::JobSpec;
use crate::state::{AttemptOutcome, JobState, StepState};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A step as stored: name, state and reason text.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredStep {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Its reason, as rendered when it was written.
    pub reason: Option<String>,
}

/// What a backend reads to settle one ended attempt.
#[derive(Clone, Copy, Debug)]
pub struct Ended<'a> {
    /// The job's document.
    pub spec: &'a JobSpec,
    /// The job's stored state.
    pub job: JobState,
    /// Whether the job has a reason already (the first one recorded stays).
    pub job_has_reason: bool,
    /// The job's steps as stored, in document order (the attempt's step still as it was).
    pub steps: &'a [StoredStep],
    /// The attempt's step.
    pub step: &'a str,
    /// The attempt's number (1-based).
    pub number: u32,
    /// How the attempt ended (already recorded on the attempt).
    pub outcome: &'a AttemptOutcome,
    /// Why it was asked to stop, if it was.
    pub stop_cause: Option<StopCause>,
    /// Whether another attempt of the job still runs. Only consulted when `job` has ended,
    /// so a backend need only read it then.
    pub attempts_running: bool,
    /// The time of settling.
    pub now: DateTime<Utc>,
    /// Retry jitter in `[0, 1)`.
    pub jitter01: f64,
}

/// One step's new state.
#[derive(Clone, Debug, PartialEq)]
pub struct StepChange {
    /// Index into the job's steps (document order).
    pub step: usize,
    /// Its new state.
    pub state: StepState,
    /// Its new reason (`None` clears it).
    pub reason: Option<Reason>,
    /// Not claimable before this time (`None` clears it).
    pub run_after: Option<DateTime<Utc>>,
}

/// What happens to the job row.
#[derive(Clone, Debug, PartialEq)]
pub enum JobChange {
    /// Nothing: the job has ended and another of its attempts still runs.
    Keep,
    /// The job had ended and its last running attempt just did: its end time is now
    /// (unless one is recorded already).
    Finished,
    /// Still live in `state` (`queued` or `running`), with `reason` recorded if it is some.
    Live {
        /// `queued` or `running`.
        state: JobState,
        /// A reason to record now (only when the job has none).
        reason: Option<Reason>,
    },
    /// Ends now in `state`, its end time now, with `reason` if it is some (`None`: the job
    /// keeps the reason it has).
    End {
        /// The terminal state.
        state: JobState,
        /// The reason to record (only when the job has none).
        reason: Option<Reason>,
    },
}

/// The changes settling an attempt writes, applied in this order: `steps`, `pending`, `job`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settlement {
    /// Single steps that change.
    pub steps: Vec<StepChange>,
    /// Every step still waiting or ready (after `steps`) ends so (one bulk write).
    pub pending: Option<crate::control::StepsEnd>,
    /// The job row.
    pub job: JobChange,
    /// How many steps became claimable (dependents, or the step itself on retry).
    pub readied: u32,
    /// The attempt's step will run again.
    pub retried: bool,
}

/// The stored steps do not fit the job's document (a corrupt store).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The attempt names a step the job does not have.
    #[error("the job has no step '{0}'")]
    UnknownStep(String),
    /// The stored steps are not the document's, in its order.
    #[error("the job's stored steps do not match its document")]
    StepsMismatch,
}

/// Decides what an ended attempt changes. See the module header for the rules.
pub fn settle(e: &Ended<'_>) -> Result<Settlement, SettleError> {
    if e.steps.len() != e.spec.steps.len() || e.steps.iter().zip(&e.spec.steps).any(|(a, b)| a.name != b.name)
    {
        return Err(SettleError::StepsMismatch);
    }
    let at = e
        .steps
        .iter()
        .position(|s| s.name == e.step)
        .ok_or_else(|| SettleError::UnknownStep(e.step.into()))?;
    let mut plan = Plan::new(e);
    if e.job.is_terminal() && e.steps[at].state.is_terminal() {
        return Ok(plan.finish(None));
    }
    if let Some(cause) = stop_override(e.stop_cause, e.job, e.outcome) {
        plan.change(at, cause.step_state(), Some(Reason::Stopped(cause)), None);
        return Ok(plan.finish(None));
    }
    let unasked;
    let judged = if *e.outcome == AttemptOutcome::Cancelled {
        unasked = LostCause::StoppedUnasked.outcome();
        &unasked
    } else {
        e.outcome
    };
    let mut decision = decide_after_attempt(&e.spec.steps[at], e.number, judged, e.now, e.jitter01);
    if let StepDecision::Retry { .. } = decision {
        // Once a step has failed for good the job is failing: nothing new starts, retries
        // included (the same rule that skips the steps not started yet).
        if let Some(failed) =
            e.steps.iter().enumerate().find(|(i, s)| s.state == StepState::Failed && *i != at)
        {
            decision =
                StepDecision::Failed { reason: Reason::NotRetried(judged.clone(), failed.1.name.clone()) };
        }
    }
    let mut failure = None;
    match decision {
        StepDecision::Succeeded => {
            plan.change(at, StepState::Succeeded, None, None);
            // Only a step that needs this one can have become ready (a single-step job, the
            // common case, has none).
            if !e.job.is_terminal() && e.spec.steps.iter().any(|s| s.needs.iter().any(|n| n == e.step)) {
                plan.ready_dependents();
            }
        }
        StepDecision::Retry { run_after, reason } => {
            plan.change(at, StepState::Ready, Some(reason), Some(run_after));
            plan.out.readied = 1;
            plan.out.retried = true;
        }
        StepDecision::Failed { reason } => {
            failure = Some(Reason::Step { step: e.step.to_string(), reason: reason.to_string() });
            plan.change(at, StepState::Failed, Some(reason), None);
            plan.end_pending(Reason::NotRunAfterFailure(e.step.to_string()));
        }
        StepDecision::Stopped => {
            // Unreachable: a cancelled outcome is judged as lost above. Kept total so a
            // future policy change cannot leave a step running forever.
            plan.change(at, StepState::Cancelled, Some(Reason::CancelledByWorker), None);
            plan.end_pending(Reason::NotRunAfterCancel(e.step.to_string()));
        }
    }
    Ok(plan.finish(failure))
}

/// The stop cause that decides the step's end instead of the policy, if any. A success
/// always counts: the work was done.
fn stop_override(cause: Option<StopCause>, job: JobState, outcome: &AttemptOutcome) -> Option<StopCause> {
    if *outcome == AttemptOutcome::Succeeded {
        return None;
    }
    cause.or(match job {
        JobState::Cancelled => Some(StopCause::Cancelled),
        JobState::Revoked => Some(StopCause::Revoked),
        // A failed job with a step still running can only have failed by its deadline.
        JobState::Failed => Some(StopCause::Deadline),
        _ => None,
    })
}

/// A settlement being built, with the steps' states as it leaves them.
struct Plan<'e, 'a> {
    e: &'e Ended<'a>,
    states: Vec<StepState>,
    out: Settlement,
}

impl<'e, 'a> Plan<'e, 'a> {
    fn new(e: &'e Ended<'a>) -> Self {
        Self {
            e,
            states: e.steps.iter().map(|s| s.state).collect(),
            out: Settlement {
                steps: Vec::new(),
                pending: None,
                job: JobChange::Keep,
                readied: 0,
                retried: false,
            },
        }
    }

    fn change(
        &mut self,
        step: usize,
        state: StepState,
        reason: Option<Reason>,
        run_after: Option<DateTime<Utc>>,
    ) {
        self.states[step] = state;
        self.out.steps.push(StepChange { step, state, reason, run_after });
    }

    /// Waiting steps whose needs have all succeeded become ready.
    fn ready_dependents(&mut self) {
        let index: HashMap<&str, usize> =
            self.e.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        for (i, s) in self.e.spec.steps.iter().enumerate() {
            let met =
                |n: &String| index.get(n.as_str()).is_some_and(|&j| self.states[j] == StepState::Succeeded);
            if self.states[i] == StepState::Waiting && s.needs.iter().all(met) {
                self.change(i, StepState::Ready, None, None);
                self.out.readied += 1;
            }
        }
    }

    /// Steps not started yet are skipped.
    fn end_pending(&mut self, reason: Reason) {
        for s in &mut self.states {
            if matches!(s, StepState::Waiting | StepState::Ready) {
                *s = StepState::Skipped;
            }
        }
        self.out.pending = Some(crate::control::StepsEnd { state: StepState::Skipped, reason });
    }

    /// Brings the job in line with its steps; `failure` names the step that just failed.
    fn finish(mut self, failure: Option<Reason>) -> Settlement {
        let e = self.e;
        self.out.job = if e.job.is_terminal() {
            // An ended job's steps have ended too; it is finished once no attempt runs.
            if e.attempts_running { JobChange::Keep } else { JobChange::Finished }
        } else {
            let keep_reason = e.job_has_reason;
            match job_state_from_steps(&self.states) {
                Some(state) => {
                    let reason = (!keep_reason).then(|| failure.unwrap_or_else(|| self.job_reason(state)));
                    JobChange::End { state, reason }
                }
                None => {
                    let running = self.states.contains(&StepState::Running);
                    let state = if running { JobState::Running } else { JobState::Queued };
                    JobChange::Live { state, reason: failure.filter(|_| !keep_reason) }
                }
            }
        };
        self.out
    }

    /// The reason a job ended in `state`, named after the step that decided it.
    fn job_reason(&self, state: JobState) -> Reason {
        if state == JobState::Succeeded {
            return Reason::Succeeded { steps: self.states.len() };
        }
        let same = |s: &StepState| s.as_str() == state.as_str();
        let decider = self
            .states
            .iter()
            .position(same)
            .or_else(|| self.states.iter().position(|s| *s != StepState::Succeeded));
        match decider {
            Some(i) => {
                let reason = match self.reason_of(i) {
                    Some(r) => r,
                    None => self.states[i].as_str().to_string(),
                };
                Reason::Step { step: self.e.steps[i].name.clone(), reason }
            }
            None => Reason::Ended(state),
        }
    }

    /// Step `i`'s reason text as this settlement leaves it.
    fn reason_of(&self, i: usize) -> Option<String> {
        if let Some(c) = self.out.steps.iter().rev().find(|c| c.step == i) {
            return c.reason.as_ref().map(Reason::to_string);
        }
        if let Some(p) = &self.out.pending
            && matches!(self.e.steps[i].state, StepState::Waiting | StepState::Ready)
        {
            return Some(p.reason.to_string());
        }
        self.e.steps[i].reason.clone()
    }
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod tests;
