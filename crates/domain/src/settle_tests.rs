//! One test per rule of [`super::settle`], on in-memory job states.

use super::*;
use crate::spec::{Backoff, OnLost, RetryPolicy, StepSpec};
use chrono::TimeZone;
use std::time::Duration;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).single().unwrap()
}

fn fail(code: i32) -> AttemptOutcome {
    AttemptOutcome::Failed { exit_code: Some(code), signal: None, why: None }
}

/// A job of `steps` (name, needs), all with `max_attempts` attempts and a 10 s backoff.
fn spec(steps: &[(&str, &[&str])], max_attempts: u32) -> JobSpec {
    JobSpec::new(
        steps
            .iter()
            .map(|(name, needs)| {
                let mut s = StepSpec::new(*name, "true");
                s.needs = needs.iter().map(|n| n.to_string()).collect();
                s.retry = RetryPolicy {
                    max_attempts,
                    backoff: Backoff {
                        initial: Duration::from_secs(10),
                        max: Duration::from_secs(60),
                        factor: 2.0,
                        jitter: 0.0,
                    },
                };
                s
            })
            .collect(),
    )
}

fn stored(steps: &[(&str, StepState)]) -> Vec<StoredStep> {
    steps.iter().map(|(n, s)| StoredStep { name: n.to_string(), state: *s, reason: None }).collect()
}

/// The settle input for an attempt of `step` (number `number`) of a live running job.
fn ended<'a>(
    spec: &'a JobSpec,
    steps: &'a [StoredStep],
    step: &'a str,
    number: u32,
    outcome: &'a AttemptOutcome,
) -> Ended<'a> {
    Ended {
        spec,
        job: JobState::Running,
        job_has_reason: false,
        steps,
        step,
        number,
        outcome,
        stop_cause: None,
        attempts_running: false,
        now: now(),
        jitter01: 0.5,
    }
}

fn change(plan: &Settlement, step: usize) -> &StepChange {
    plan.steps.iter().find(|c| c.step == step).expect("a change of that step")
}

fn text(r: &Option<Reason>) -> Option<String> {
    r.as_ref().map(Reason::to_string)
}

#[test]
fn success_of_the_only_step_ends_the_job() {
    let spec = spec(&[("a", &[])], 1);
    let steps = stored(&[("a", StepState::Running)]);
    let plan = settle(&ended(&spec, &steps, "a", 1, &AttemptOutcome::Succeeded)).unwrap();
    assert_eq!(
        plan.steps,
        vec![StepChange { step: 0, state: StepState::Succeeded, reason: None, run_after: None }]
    );
    assert_eq!(plan.pending, None);
    assert_eq!(
        plan.job,
        JobChange::End { state: JobState::Succeeded, reason: Some(Reason::Succeeded { steps: 1 }) }
    );
    assert_eq!((plan.readied, plan.retried), (0, false));
}

#[test]
fn a_failure_is_retried_after_the_backoff() {
    let spec = spec(&[("a", &[])], 3);
    let steps = stored(&[("a", StepState::Running)]);
    let plan = settle(&ended(&spec, &steps, "a", 2, &fail(1))).unwrap();
    let c = change(&plan, 0);
    assert_eq!(c.state, StepState::Ready);
    // Retry number 2 with a 10 s initial delay doubling, no jitter: 20 s.
    assert_eq!(c.run_after, Some(now() + chrono::Duration::seconds(20)));
    assert_eq!(text(&c.reason).as_deref(), Some("exit code 1"));
    assert_eq!((plan.readied, plan.retried), (1, true));
    assert_eq!(plan.job, JobChange::Live { state: JobState::Queued, reason: None });
}

#[test]
fn the_last_attempt_fails_the_step_skips_pending_and_names_the_job() {
    let spec = spec(&[("a", &[]), ("b", &["a"]), ("c", &[])], 3);
    let steps = stored(&[("a", StepState::Running), ("b", StepState::Waiting), ("c", StepState::Ready)]);
    let plan = settle(&ended(&spec, &steps, "a", 3, &fail(2))).unwrap();
    let c = change(&plan, 0);
    assert_eq!(
        (c.state, text(&c.reason).as_deref()),
        (StepState::Failed, Some("exit code 2 (after 3 attempts)"))
    );
    let pending = plan.pending.as_ref().expect("pending steps end");
    assert_eq!(
        (pending.state, pending.reason.to_string()),
        (StepState::Skipped, "not run: step 'a' failed".into())
    );
    let want = Reason::Step { step: "a".into(), reason: "exit code 2 (after 3 attempts)".into() };
    assert_eq!(plan.job, JobChange::End { state: JobState::Failed, reason: Some(want) });
    assert!(!plan.retried);
}

#[test]
fn a_failure_while_other_steps_run_names_the_job_and_keeps_it_live() {
    let spec = spec(&[("a", &[]), ("b", &[])], 1);
    let steps = stored(&[("a", StepState::Running), ("b", StepState::Running)]);
    let plan = settle(&ended(&spec, &steps, "a", 1, &fail(1))).unwrap();
    let reason = Some(Reason::Step { step: "a".into(), reason: "exit code 1".into() });
    assert_eq!(plan.job, JobChange::Live { state: JobState::Running, reason });
    // A job that has a reason keeps it.
    let failed = fail(1);
    let mut e = ended(&spec, &steps, "a", 1, &failed);
    e.job_has_reason = true;
    assert_eq!(settle(&e).unwrap().job, JobChange::Live { state: JobState::Running, reason: None });
}

#[test]
fn no_retry_once_another_step_failed() {
    let spec = spec(&[("a", &[]), ("b", &[])], 5);
    let steps = stored(&[("a", StepState::Running), ("b", StepState::Failed)]);
    let timeout = AttemptOutcome::Timeout;
    let plan = settle(&ended(&spec, &steps, "a", 1, &timeout)).unwrap();
    let c = change(&plan, 0);
    assert_eq!(
        (c.state, text(&c.reason).as_deref()),
        (StepState::Failed, Some("timeout (not retried: step 'b' failed)"))
    );
    assert!(!plan.retried);
    // The job already failing has its reason from `b`: it keeps it.
    let mut e = ended(&spec, &steps, "a", 1, &timeout);
    e.job_has_reason = true;
    assert_eq!(settle(&e).unwrap().job, JobChange::End { state: JobState::Failed, reason: None });
}

#[test]
fn lost_attempts_follow_on_lost() {
    let lost = LostCause::LeaseExpired.outcome();
    // on_lost: retry — retried up to the floor of 3 attempts even with max_attempts 1.
    let retry = spec(&[("a", &[])], 1);
    let steps = stored(&[("a", StepState::Running)]);
    for n in 1..3 {
        let plan = settle(&ended(&retry, &steps, "a", n, &lost)).unwrap();
        assert!(plan.retried, "attempt {n}");
        assert_eq!(text(&change(&plan, 0).reason).as_deref(), Some("lost: lease expired"));
    }
    let plan = settle(&ended(&retry, &steps, "a", 3, &lost)).unwrap();
    assert_eq!(text(&change(&plan, 0).reason).as_deref(), Some("lost: lease expired (after 3 attempts)"));
    // on_lost: fail — the first loss fails the step.
    let mut fails = spec(&[("a", &[])], 5);
    fails.steps[0].on_lost = OnLost::Fail;
    let plan = settle(&ended(&fails, &steps, "a", 1, &lost)).unwrap();
    let c = change(&plan, 0);
    assert_eq!(
        (c.state, text(&c.reason).as_deref()),
        (StepState::Failed, Some("lost: lease expired (on_lost: fail)"))
    );
}

#[test]
fn a_cancel_nobody_asked_for_counts_as_lost() {
    let spec = spec(&[("a", &[])], 1);
    let steps = stored(&[("a", StepState::Running)]);
    let plan = settle(&ended(&spec, &steps, "a", 1, &AttemptOutcome::Cancelled)).unwrap();
    let c = change(&plan, 0);
    assert_eq!(c.state, StepState::Ready, "lost attempts are retried up to the floor");
    assert_eq!(text(&c.reason).as_deref(), Some("lost: stopped by its worker without a cancel"));
}

#[test]
fn stop_overrides_per_cause() {
    let spec = spec(&[("a", &[])], 5);
    let steps = stored(&[("a", StepState::Running)]);
    let cases = [
        (Some(StopCause::Cancelled), JobState::Running, StepState::Cancelled, "cancelled by user"),
        (Some(StopCause::Revoked), JobState::Running, StepState::Revoked, "revoked by operator"),
        (Some(StopCause::Deadline), JobState::Running, StepState::Failed, "deadline passed"),
        (
            Some(StopCause::NotHeld),
            JobState::Running,
            StepState::Cancelled,
            "stopped: attempt no longer held",
        ),
        // Without a flag, an ended job's state says which stop it was.
        (None, JobState::Cancelled, StepState::Cancelled, "cancelled by user"),
        (None, JobState::Revoked, StepState::Revoked, "revoked by operator"),
        (None, JobState::Failed, StepState::Failed, "deadline passed"),
    ];
    for (cause, job, state, reason) in cases {
        for outcome in [fail(1), AttemptOutcome::Cancelled, LostCause::LeaseExpired.outcome()] {
            let mut e = ended(&spec, &steps, "a", 1, &outcome);
            e.stop_cause = cause;
            e.job = job;
            let plan = settle(&e).unwrap();
            assert_eq!(plan.steps.len(), 1, "{cause:?} {job}");
            let c = change(&plan, 0);
            assert_eq!(
                (c.state, text(&c.reason).as_deref()),
                (state, Some(reason)),
                "{cause:?} {job} {outcome:?}"
            );
            assert!(!plan.retried, "a stopped attempt is never retried");
        }
    }
}

#[test]
fn a_success_counts_even_when_stopped() {
    let spec = spec(&[("a", &[])], 1);
    let steps = stored(&[("a", StepState::Running)]);
    let mut e = ended(&spec, &steps, "a", 1, &AttemptOutcome::Succeeded);
    e.stop_cause = Some(StopCause::Cancelled);
    let plan = settle(&e).unwrap();
    assert_eq!(change(&plan, 0).state, StepState::Succeeded);
}

#[test]
fn an_ended_job_keeps_what_its_end_gave_the_step() {
    let spec = spec(&[("a", &[]), ("b", &[])], 1);
    let steps = stored(&[("a", StepState::Revoked), ("b", StepState::Revoked)]);
    let mut e = ended(&spec, &steps, "a", 1, &AttemptOutcome::Succeeded);
    e.job = JobState::Revoked;
    e.attempts_running = true;
    let plan = settle(&e).unwrap();
    assert!(plan.steps.is_empty() && plan.pending.is_none());
    assert_eq!(plan.job, JobChange::Keep, "another attempt still runs");
    e.attempts_running = false;
    assert_eq!(settle(&e).unwrap().job, JobChange::Finished, "the last attempt finishes the job");
}

#[test]
fn dependents_become_ready_when_all_their_needs_succeeded() {
    // Diamond: a → (b, c) → d.
    let spec = spec(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])], 1);
    let steps = stored(&[
        ("a", StepState::Running),
        ("b", StepState::Waiting),
        ("c", StepState::Waiting),
        ("d", StepState::Waiting),
    ]);
    let plan = settle(&ended(&spec, &steps, "a", 1, &AttemptOutcome::Succeeded)).unwrap();
    let ready: Vec<usize> =
        plan.steps.iter().filter(|c| c.state == StepState::Ready).map(|c| c.step).collect();
    assert_eq!(ready, [1, 2]);
    assert_eq!(plan.readied, 2);
    assert_eq!(plan.job, JobChange::Live { state: JobState::Queued, reason: None });

    // b done, c still running: d waits.
    let steps = stored(&[
        ("a", StepState::Succeeded),
        ("b", StepState::Running),
        ("c", StepState::Running),
        ("d", StepState::Waiting),
    ]);
    let plan = settle(&ended(&spec, &steps, "b", 1, &AttemptOutcome::Succeeded)).unwrap();
    assert_eq!(plan.readied, 0);
    assert_eq!(plan.job, JobChange::Live { state: JobState::Running, reason: None });

    // c done after b: d is ready.
    let steps = stored(&[
        ("a", StepState::Succeeded),
        ("b", StepState::Succeeded),
        ("c", StepState::Running),
        ("d", StepState::Waiting),
    ]);
    let plan = settle(&ended(&spec, &steps, "c", 1, &AttemptOutcome::Succeeded)).unwrap();
    assert_eq!(change(&plan, 3).state, StepState::Ready);
    assert_eq!(plan.readied, 1);

    // d done: all four succeeded.
    let steps = stored(&[
        ("a", StepState::Succeeded),
        ("b", StepState::Succeeded),
        ("c", StepState::Succeeded),
        ("d", StepState::Running),
    ]);
    let plan = settle(&ended(&spec, &steps, "d", 1, &AttemptOutcome::Succeeded)).unwrap();
    let job = JobChange::End { state: JobState::Succeeded, reason: Some(Reason::Succeeded { steps: 4 }) };
    assert_eq!(plan.job, job);
    assert_eq!(Reason::Succeeded { steps: 4 }.to_string(), "all 4 steps succeeded");
}

#[test]
fn the_job_is_named_after_the_step_that_decided_it() {
    // b failed earlier (the job got no reason then, e.g. written by an older build); a now
    // succeeds and ends the job: it is named after b's stored reason.
    let spec = spec(&[("a", &[]), ("b", &[])], 1);
    let mut steps = stored(&[("a", StepState::Running), ("b", StepState::Failed)]);
    steps[1].reason = Some("exit code 4".into());
    let plan = settle(&ended(&spec, &steps, "a", 1, &AttemptOutcome::Succeeded)).unwrap();
    let want = Reason::Step { step: "b".into(), reason: "exit code 4".into() };
    assert_eq!(plan.job, JobChange::End { state: JobState::Failed, reason: Some(want) });
}

#[test]
fn corrupt_stores_are_refused() {
    let spec = spec(&[("a", &[])], 1);
    let steps = stored(&[("a", StepState::Running)]);
    let e = ended(&spec, &steps, "x", 1, &AttemptOutcome::Succeeded);
    assert_eq!(settle(&e).unwrap_err(), SettleError::UnknownStep("x".into()));
    let other = stored(&[("z", StepState::Running)]);
    let e = ended(&spec, &other, "z", 1, &AttemptOutcome::Succeeded);
    assert_eq!(settle(&e).unwrap_err(), SettleError::StepsMismatch);
}
