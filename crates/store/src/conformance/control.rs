//! Scenarios for operator control and deadlines: cancel, `stop_job` revoke, paused queues,
//! deadline expiry and `retry_job`. Durable revoke lists live in `revokes.rs`.

use super::fixtures::{
    TTL, assert_conflict, assert_not_found, at, claim, claim_one, finish, get, needs, new_id, retrying, step,
    step_of, submit, t0, worker,
};
use crate::{ConflictKind, Heartbeat, JobStore, QueueStats, StopCause, StopKind};
use rota_domain::{AttemptOutcome, AttemptStatus, JobSpec, JobState, StepState};
use std::sync::Arc;

pub(super) async fn cancel_queued_and_running(s: Arc<dyn JobStore>) {
    let queued = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let out = s.stop_job(queued, StopKind::Cancel, at(1)).await.unwrap();
    assert!(out.changed && out.running.is_empty());
    assert_eq!(out.row.state, JobState::Cancelled);
    assert_eq!(out.row.reason.as_deref(), Some("cancelled by user"));
    assert_eq!(out.row.finished_at, Some(at(1)));
    let rec = get(&s, queued).await;
    assert!(rec.steps.iter().all(|s| s.state == StepState::Cancelled), "{:?}", rec.steps);
    let again = s.stop_job(queued, StopKind::Cancel, at(2)).await.unwrap();
    assert!(!again.changed, "an ended job is returned unchanged");
    assert_eq!(again.row.finished_at, Some(at(1)));

    let running = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), at(3)).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(4)).await;
    let out = s.stop_job(running, StopKind::Cancel, at(5)).await.unwrap();
    assert!(out.changed);
    assert_eq!(out.row.state, JobState::Cancelled);
    assert_eq!(out.row.finished_at, None, "a step is still running");
    assert_eq!(out.running.len(), 1);
    let r = &out.running[0];
    assert_eq!((r.attempt_id, r.job_id, r.step.as_str()), (a.attempt_id, running, "a"));
    assert_eq!((r.session, r.cause), (w, StopCause::Cancelled));
    assert!(claim(&s, w, 5, at(6)).await.is_empty(), "nothing of a cancelled job starts");
    assert_eq!(step_of(&get(&s, running).await, "b").state, StepState::Cancelled);
    let stopping = step_of(&get(&s, running).await, "a").clone();
    assert_eq!(stopping.state, StepState::Cancelled, "the running step ends with its job, not after it");
    assert_eq!(stopping.attempts[0].status, AttemptStatus::Running, "its attempt is still being stopped");

    let end = finish(&s, w, &a, AttemptOutcome::Cancelled, at(7)).await;
    assert_eq!(
        (end.job_finished, end.job_state),
        (true, Some(JobState::Cancelled)),
        "its last attempt ends the cancelled job"
    );
    let rec = get(&s, running).await;
    assert_eq!(rec.row.state, JobState::Cancelled, "the job keeps its state");
    assert_eq!(rec.row.finished_at, Some(at(7)), "it ends when its last step stops");
    assert_eq!(step_of(&rec, "a").state, StepState::Cancelled);
    assert_eq!(step_of(&rec, "a").attempts[0].status, AttemptStatus::Cancelled);

    assert_not_found(s.stop_job(new_id(), StopKind::Cancel, at(8)).await, "stop_job of an unknown id");
}

pub(super) async fn revoke_and_lost_stopped_attempt(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![retrying(step("a"), 5, 1), step("b")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let out = s.stop_job(id, StopKind::Revoke, at(2)).await.unwrap();
    assert_eq!(out.row.state, JobState::Revoked);
    assert_eq!(out.row.reason.as_deref(), Some("revoked by operator"));
    assert_eq!(
        out.running.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a.attempt_id, StopCause::Revoked)]
    );
    assert_eq!(step_of(&get(&s, id).await, "b").state, StepState::Revoked);

    // The worker never reports: the lease ends and the step is revoked, not retried.
    let lost = s.expire_leases(at(100)).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert!(!lost[0].retried, "a lost attempt of a stopped job is not retried");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").state, StepState::Revoked);
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Revoked, Some(at(100))));
    assert!(claim(&s, w, 5, at(200)).await.is_empty());
}

pub(super) async fn deadline_expiry(s: Arc<dyn JobStore>) {
    let mut early = JobSpec::new(vec![step("x")]);
    early.deadline = Some(at(10));
    let early_id = submit(&s, early, t0()).await;
    let mut spec = JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), step("c")]);
    spec.deadline = Some(at(60));
    let id = submit(&s, spec, t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.job_id, early_id, "older job first");
    let a2 = claim_one(&s, w, at(2)).await;
    assert_eq!((a2.job_id, a2.step.as_str()), (id, "a"));
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(3)).await;

    assert!(s.expire_deadlines(at(30)).await.unwrap().is_empty());
    assert!(claim(&s, w, 5, at(61)).await.is_empty(), "nothing starts past the deadline, swept or not");
    let flagged = s.expire_deadlines(at(61)).await.unwrap();
    assert_eq!(
        flagged.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a2.attempt_id, StopCause::Deadline)]
    );
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.reason.as_deref()), (JobState::Failed, Some("deadline passed")));
    assert_eq!(rec.row.finished_at, None, "step a is still running");
    for name in ["b", "c"] {
        let st = step_of(&rec, name);
        assert_eq!((st.state, st.reason.as_deref()), (StepState::Skipped, Some("deadline passed")), "{name}");
    }
    assert_eq!(get(&s, early_id).await.row.state, JobState::Succeeded, "a finished job is untouched");
    assert!(s.expire_deadlines(at(62)).await.unwrap().is_empty(), "once");

    let hb = Heartbeat { session: w, attempts: vec![a2.attempt_id], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(63), TTL).await.unwrap();
    assert_eq!(out.stop, [(a2.attempt_id, StopCause::Deadline)]);
    finish(&s, w, &a2, AttemptOutcome::Cancelled, at(64)).await;
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Failed, Some(at(64))));
    let a = step_of(&rec, "a");
    assert_eq!((a.state, a.reason.as_deref()), (StepState::Failed, Some("deadline passed")));
}

pub(super) async fn retry_job(s: Arc<dyn JobStore>) {
    let id =
        submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), needs(step("c"), &["b"])]), t0())
            .await;
    let w = worker(&s).await;
    assert_conflict(s.retry_job(id, at(0)).await, ConflictKind::JobState, "retry of a queued job");
    let a = claim_one(&s, w, at(1)).await;
    assert_conflict(s.retry_job(id, at(1)).await, ConflictKind::JobState, "retry of a running job");
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(2)).await;
    let b = claim_one(&s, w, at(3)).await;
    finish(&s, w, &b, AttemptOutcome::Timeout, at(4)).await;
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Failed);
    assert_eq!(step_of(&rec, "c").state, StepState::Skipped);

    let row = s.retry_job(id, at(5)).await.expect("retry of a failed job");
    assert_eq!((row.state, row.reason.as_deref(), row.finished_at), (JobState::Queued, None, None));
    let rec = get(&s, id).await;
    let states: Vec<StepState> = rec.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [StepState::Succeeded, StepState::Ready, StepState::Waiting],
        "succeeded steps are kept"
    );
    assert!(step_of(&rec, "b").reason.is_none());
    let b2 = claim_one(&s, w, at(6)).await;
    assert_eq!((b2.step.as_str(), b2.number), ("b", 2), "attempt numbers continue");
    finish(&s, w, &b2, AttemptOutcome::Succeeded, at(7)).await;
    let c = claim_one(&s, w, at(8)).await;
    assert!(finish(&s, w, &c, AttemptOutcome::Succeeded, at(9)).await.job_finished);
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Succeeded);
    assert_eq!(step_of(&rec, "b").attempts.len(), 2, "attempt history is kept");
    assert_conflict(s.retry_job(id, at(10)).await, ConflictKind::JobState, "retry of a succeeded job");

    let cancelled = submit(&s, JobSpec::new(vec![step("x")]), at(11)).await;
    s.stop_job(cancelled, StopKind::Cancel, at(12)).await.unwrap();
    assert_eq!(s.retry_job(cancelled, at(13)).await.unwrap().state, JobState::Queued);
    assert_eq!(claim_one(&s, w, at(14)).await.job_id, cancelled);
    assert_not_found(s.retry_job(new_id(), at(15)).await, "retry of an unknown job");
}

pub(super) async fn paused_queues(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    assert!(s.set_queue_paused("default", "default", true, at(1)).await.unwrap());
    assert!(
        !s.set_queue_paused("default", "default", true, at(1)).await.unwrap(),
        "pausing twice changes nothing"
    );
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "nothing is claimed from a paused queue");
    let stats = s.queue_stats(Some("default")).await.unwrap();
    assert_eq!(
        stats,
        vec![QueueStats {
            namespace: "default".into(),
            queue: "default".into(),
            ready: 1,
            running: 0,
            paused: true,
            oldest_ready: Some(id),
        }]
    );
    assert!(s.set_queue_paused("default", "default", false, at(3)).await.unwrap());
    let c = claim_one(&s, w, at(4)).await;
    assert_eq!(c.job_id, id);
    let stats = s.queue_stats(Some("default")).await.unwrap();
    assert_eq!(
        stats,
        vec![QueueStats {
            namespace: "default".into(),
            queue: "default".into(),
            ready: 0,
            running: 1,
            paused: false,
            oldest_ready: None,
        }]
    );
}
