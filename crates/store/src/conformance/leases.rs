//! Scenarios for leases and heartbeats: expiry (retry or fail by `on_lost`), extension at
//! start, renewal and the stop list a heartbeat returns.

use super::fixtures::{
    TTL, WorkerSpec, at, claim, claim_one, get, register, step, step_of, submit, t0, worker,
};
use crate::{Heartbeat, JobStore, StopCause, StopKind};
use rota_domain::{AttemptId, AttemptOutcome, AttemptStatus, JobSpec, JobState, OnLost, StepState};
use std::sync::Arc;

pub(super) async fn lease_expiry_retries_or_fails(s: Arc<dyn JobStore>) {
    let retry_job = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let mut never_twice = step("once");
    never_twice.on_lost = OnLost::Fail;
    let fail_job = submit(&s, JobSpec::new(vec![never_twice]), t0()).await;
    let w = worker(&s).await;
    let claimed = claim(&s, w, 2, at(0)).await;
    assert_eq!(claimed.len(), 2);

    assert!(s.expire_leases(at(20)).await.unwrap().is_empty(), "leases still valid");
    let mut lost = s.expire_leases(at(31)).await.unwrap();
    lost.sort_by_key(|l| l.attempt_id);
    assert_eq!(lost.len(), 2);
    for l in &lost {
        assert_eq!(l.session, w);
        let expect_retry = l.job_id == retry_job;
        assert_eq!(l.retried, expect_retry, "{l:?}");
    }
    assert!(s.expire_leases(at(32)).await.unwrap().is_empty(), "expiry happens once");

    let rec = get(&s, retry_job).await;
    let a = step_of(&rec, "a");
    assert_eq!(a.attempts[0].status, AttemptStatus::Lost);
    assert!(matches!(a.attempts[0].outcome, Some(AttemptOutcome::Lost { .. })));
    assert_eq!(
        a.state,
        StepState::Ready,
        "on_lost: retry (a lost attempt is retried even with max_attempts 1)"
    );
    assert_eq!(rec.row.state, JobState::Queued);
    let run_after = a.run_after.unwrap_or(at(31));
    let again = claim_one(&s, w, run_after).await;
    assert_eq!((again.job_id, again.number), (retry_job, 2));

    let rec = get(&s, fail_job).await;
    assert_eq!(rec.row.state, JobState::Failed);
    let reason = rec.row.reason.unwrap_or_default();
    assert!(reason.contains("lost"), "on_lost: fail names the loss: {reason}");
    assert_eq!(rec.row.finished_at, Some(at(31)));
}

pub(super) async fn extend_live_leases(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let w = worker(&s).await;
    claim(&s, w, 2, at(0)).await;
    assert_eq!(s.extend_live_leases(at(100), TTL).await.unwrap(), 2);
    assert!(s.expire_leases(at(120)).await.unwrap().is_empty(), "extended leases hold");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].lease_expires_at, Some(at(130)));
    assert_eq!(s.expire_leases(at(131)).await.unwrap().len(), 2);
    assert_eq!(s.extend_live_leases(at(200), TTL).await.unwrap(), 0, "only running attempts");
}

pub(super) async fn heartbeat_renews_and_stops(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let other_id = submit(&s, JobSpec::new(vec![step("b")]), t0()).await;
    let w = worker(&s).await;
    let got = claim(&s, w, 2, at(0)).await;
    let (a, b) = (got[0].attempt_id, got[1].attempt_id);
    let bogus = AttemptId(i64::MAX - 7);

    let hb = Heartbeat { session: w, attempts: vec![a, b, bogus], draining: false, concurrency: Some(9) };
    let out = s.heartbeat(hb, at(20), TTL).await.unwrap();
    let mut renewed = out.renewed.clone();
    renewed.sort();
    assert_eq!(renewed, [a, b]);
    assert_eq!(out.stop, [(bogus, StopCause::NotHeld)]);
    assert!(s.expire_leases(at(40)).await.unwrap().is_empty(), "renewed to 20s + TTL");
    let me = s.list_workers().await.unwrap().into_iter().find(|r| r.session == w).expect("worker listed");
    assert_eq!((me.concurrency, me.last_heartbeat_at, me.running), (9, at(20), 2));

    // A heartbeat that leaves an attempt out does not renew it.
    let hb = Heartbeat { session: w, attempts: vec![a], draining: false, concurrency: None };
    s.heartbeat(hb, at(45), TTL).await.unwrap();
    let lost = s.expire_leases(at(51)).await.unwrap();
    assert_eq!(lost.iter().map(|l| l.attempt_id).collect::<Vec<_>>(), [b]);
    assert_eq!(lost[0].job_id, other_id);

    // Cancelling the job: the holder is told to stop, and its lease is still renewed.
    s.stop_job(id, StopKind::Cancel, at(52)).await.unwrap();
    let hb = Heartbeat { session: w, attempts: vec![a, b], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(53), TTL).await.unwrap();
    assert_eq!(out.renewed, [a]);
    let mut stop = out.stop.clone();
    stop.sort_by_key(|(id, _)| *id);
    assert_eq!(stop, [(a, StopCause::Cancelled), (b, StopCause::NotHeld)]);

    // A superseded session holds nothing.
    register(&s, WorkerSpec::default(), at(54)).await;
    let hb = Heartbeat { session: w, attempts: vec![a], draining: false, concurrency: None };
    let out = s.heartbeat(hb, at(55), TTL).await.unwrap();
    assert!(out.renewed.is_empty());
    assert_eq!(out.stop, [(a, StopCause::NotHeld)]);
}
