//! Scenarios for completing attempts: fencing (who may record a result, repeats), retries with
//! backoff, no retry once a step failed, an unasked cancel, and late results' run time.

use super::fixtures::{
    WorkerSpec, assert_conflict, at, claim, claim_one, completion, failed, finish, get, needs, register,
    retrying, step, step_of, submit, t0, try_finish, worker,
};
use crate::{ClaimedAttempt, Completion, ConflictKind, JobStore, Result, StoreError};
use rota_domain::{AttemptId, AttemptOutcome, AttemptStatus, JobSpec, JobState, StepState};
use std::sync::Arc;

pub(super) async fn fencing(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let holder = worker(&s).await;
    let other = register(&s, WorkerSpec { name: "w2", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, holder, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);

    assert_conflict(
        s.record_start(other, a.attempt_id, 1).await,
        ConflictKind::NotHeld,
        "record_start by another session",
    );
    s.record_start(holder, a.attempt_id, 777).await.expect("record_start by the holder");
    assert_eq!(step_of(&get(&s, id).await, "a").attempts[0].pid, Some(777));

    let r = try_finish(&s, other, a, AttemptOutcome::Succeeded, at(2)).await;
    assert_conflict(r, ConflictKind::NotHeld, "complete by another session");
    let mut wrong_step = completion(holder, a, AttemptOutcome::Succeeded);
    wrong_step.step = "b".into();
    let r = s.complete(vec![wrong_step], at(2)).await.unwrap().remove(0);
    assert_conflict(r, ConflictKind::WrongAttempt, "complete naming another step");
    assert_eq!(
        step_of(&get(&s, id).await, "a").state,
        StepState::Running,
        "refused completions change nothing"
    );

    let first = finish(&s, holder, a, failed(3), at(3)).await;
    assert_eq!((first.status, first.repeated), (AttemptStatus::Failed, false));
    let again = finish(&s, holder, a, failed(3), at(4)).await;
    assert!(again.repeated, "an identical repeat returns the recorded result");
    assert_eq!(
        (again.status, again.outcome.clone(), again.attempt_id),
        (first.status, failed(3), a.attempt_id)
    );
    assert_conflict(
        try_finish(&s, holder, a, AttemptOutcome::Succeeded, at(5)).await,
        ConflictKind::Ended,
        "a different outcome",
    );
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].outcome, Some(failed(3)), "first outcome stands");
    assert_eq!(step_of(&rec, "a").attempts[0].finished_at, Some(at(3)));
    assert_eq!(step_of(&rec, "a").state, StepState::Failed);

    // A completion batch: per-item results, a refused item never undoes the others.
    let items = vec![
        completion(other, b, AttemptOutcome::Succeeded),
        completion(holder, b, AttemptOutcome::Succeeded),
    ];
    let out = s.complete(items, at(6)).await.unwrap();
    assert!(matches!(&out[0], Err(StoreError::Conflict(ConflictKind::NotHeld, _))), "{:?}", out[0]);
    assert!(out[1].as_ref().is_ok_and(|r| r.job_finished), "{:?}", out[1]);
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(reason.contains("'a'") && reason.contains("exit code 3"), "job reason names the step: {reason}");

    // A superseded session's completion is refused.
    let id2 = submit(&s, JobSpec::new(vec![step("z")]), at(7)).await;
    let z = claim_one(&s, holder, at(8)).await;
    assert_eq!(z.job_id, id2);
    register(&s, WorkerSpec::default(), at(9)).await;
    assert_conflict(
        try_finish(&s, holder, &z, AttemptOutcome::Succeeded, at(10)).await,
        ConflictKind::Ended,
        "superseded session",
    );
    let unknown = ClaimedAttempt { attempt_id: AttemptId(i64::MAX - 1), ..z.clone() };
    let r = try_finish(&s, holder, &unknown, AttemptOutcome::Succeeded, at(10)).await;
    assert!(matches!(r, Err(StoreError::NotFound(_) | StoreError::Conflict(..))), "unknown attempt: {r:?}");
}

pub(super) async fn retry_with_backoff(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![retrying(step("a"), 3, 10), needs(step("b"), &["a"])]), t0()).await;
    let w = worker(&s).await;
    let first = claim_one(&s, w, at(0)).await;
    let r = finish(&s, w, &first, failed(1), at(1)).await;
    assert_eq!((r.readied, r.job_finished), (1, false), "a retry readies the step again");
    let rec = get(&s, id).await;
    let a = step_of(&rec, "a");
    assert_eq!(a.state, StepState::Ready);
    assert_eq!(a.run_after, Some(at(11)), "initial backoff 10s, no jitter");
    assert_eq!(a.reason.as_deref(), Some("exit code 1"));
    assert_eq!(rec.row.state, JobState::Queued, "nothing is running");

    assert!(claim(&s, w, 5, at(5)).await.is_empty(), "not claimable before run_after");
    let second = claim_one(&s, w, at(11)).await;
    assert_eq!((second.step.as_str(), second.number), ("a", 2));
    finish(&s, w, &second, failed(1), at(12)).await;
    assert_eq!(get(&s, id).await.steps[0].run_after, Some(at(32)), "backoff doubles");
    assert!(claim(&s, w, 5, at(31)).await.is_empty());
    let third = claim_one(&s, w, at(32)).await;
    assert_eq!(third.number, 3);
    let end = finish(&s, w, &third, failed(2), at(33)).await;
    assert!(end.job_finished, "out of attempts: the job fails");
    assert_eq!(end.job_state, Some(JobState::Failed), "the completion says how the job ended");

    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    assert_eq!(rec.row.finished_at, Some(at(33)));
    assert!(rec.row.reason.as_deref().is_some_and(|r| r.contains("exit code 2")), "{:?}", rec.row.reason);
    assert_eq!(step_of(&rec, "a").attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3]);
    let b = step_of(&rec, "b");
    assert_eq!(b.state, StepState::Skipped, "dependents of a failed step are skipped");
    assert!(b.reason.as_deref().is_some_and(|r| r.contains("'a'")), "{:?}", b.reason);
    assert_eq!(rec.row.counts.failed, 2);
}

pub(super) async fn no_retry_once_a_step_failed(s: Arc<dyn JobStore>) {
    let id =
        submit(&s, JobSpec::new(vec![step("a"), retrying(step("b"), 5, 1), needs(step("c"), &["b"])]), t0())
            .await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(1)).await;
    let (a, b) = (&got[0], &got[1]);
    let r = finish(&s, w, a, failed(4), at(2)).await;
    assert!(!r.job_finished, "b is still running");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Running);
    assert_eq!(step_of(&rec, "c").state, StepState::Skipped, "nothing new starts once a step failed");
    let r = finish(&s, w, b, failed(1), at(3)).await;
    assert!(r.job_finished, "b has retries left, but the job is already failing");
    assert_eq!(r.readied, 0);
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Failed, Some(at(3))));
    assert_eq!(step_of(&rec, "b").state, StepState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(
        reason.contains("'a'") && reason.contains("exit code 4"),
        "the first failure is the reason: {reason}"
    );
    assert!(claim(&s, w, 5, at(100)).await.is_empty());
}

pub(super) async fn unasked_cancel_is_not_a_cancel(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let r = finish(&s, w, &a, AttemptOutcome::Cancelled, at(2)).await;
    assert_eq!((r.status, r.job_finished), (AttemptStatus::Cancelled, false), "recorded as reported");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Queued, "nobody cancelled the job: the step follows on_lost");
    assert_eq!(step_of(&rec, "a").state, StepState::Ready);
}

/// A result that arrives late (server outage) ends its attempt at start + the run time its
/// worker measured, never later than its arrival; without one, at its arrival.
pub(super) async fn late_results_keep_their_run_time(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b"), step("c")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 3, at(1)).await;
    assert_eq!(got.len(), 3);
    let with =
        |c: &ClaimedAttempt, run_ms| Completion { run_ms, ..completion(w, c, AttemptOutcome::Succeeded) };
    let results = s
        .complete(vec![with(&got[0], Some(2_000)), with(&got[1], Some(60_000)), with(&got[2], None)], at(10))
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let rec = get(&s, id).await;
    let ended = |c: &ClaimedAttempt| step_of(&rec, &c.step).attempts[0].finished_at;
    assert_eq!(ended(&got[0]), Some(at(3)), "start + its own run time, not the arrival");
    assert_eq!(ended(&got[1]), Some(at(10)), "never later than the arrival");
    assert_eq!(ended(&got[2]), Some(at(10)), "an older worker's result: its arrival");
}

/// Outputs of a succeeded attempt are stored with it and reach the steps that need it as
/// `ROTA_OUT_<STEP>_<KEY>`; a failed attempt's outputs are not kept, and a step that needs
/// nothing gets none.
pub(super) async fn outputs_reach_the_steps_that_need_them(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let other = submit(&s, JobSpec::new(vec![step("z")]), t0()).await;
    let w = worker(&s).await;
    let first = claim(&s, w, 2, at(1)).await;
    let a = first.iter().find(|c| c.step == "a").expect("a claimed");
    let z = first.iter().find(|c| c.step == "z").expect("z claimed");
    assert!(!a.env.keys().any(|k| k.starts_with("ROTA_OUT_")), "{:?}", a.env);
    let with = |c: &ClaimedAttempt, outcome: AttemptOutcome, pairs: &[(&str, &str)]| Completion {
        outputs: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..completion(w, c, outcome)
    };
    let done = s
        .complete(
            vec![
                with(a, AttemptOutcome::Succeeded, &[("version", "1.2"), ("NOTE", "a=b")]),
                with(z, failed(1), &[("x", "1")]),
            ],
            at(2),
        )
        .await
        .unwrap();
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    let b = claim_one(&s, w, at(3)).await;
    assert_eq!(b.step, "b");
    assert_eq!(b.env.get("ROTA_OUT_A_VERSION").map(String::as_str), Some("1.2"), "{:?}", b.env);
    assert_eq!(b.env.get("ROTA_OUT_A_NOTE").map(String::as_str), Some("a=b"));
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].outputs.len(), 2);
    let rec = get(&s, other).await;
    assert!(step_of(&rec, "z").attempts[0].outputs.is_empty(), "a failed attempt keeps no outputs");
}
