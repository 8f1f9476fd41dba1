//! Scenarios for durable revokes: revoked job ids and idempotency keys, with and without
//! terminate, expiry and pruning of the lists.

use super::fixtures::{
    at, claim, claim_one, finish, get, keyed, needs, new_id, step, step_of, submit, t0, worker,
};
use crate::{Heartbeat, JobStore, KeyRevokeRequest, NewJob, RevokeRequest, StopCause, StoreError};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptOutcome, AttemptStatus, JobId, JobSpec, JobState, StepState};
use std::sync::Arc;
use std::time::Duration;

fn revoke(id: JobId, terminate: bool, expires_at: Option<DateTime<Utc>>) -> RevokeRequest {
    RevokeRequest { namespace: "default".into(), job_id: id, terminate, signal: None, expires_at }
}

pub(super) async fn durable_revokes(s: Arc<dyn JobStore>) {
    // A queued job: revoked at once, never claimed.
    let queued = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let out = s.revoke_jobs(vec![revoke(queued, false, None)], at(1)).await.unwrap().pop().unwrap().unwrap();
    assert!(out.changed && out.running.is_empty());
    assert_eq!(out.row.as_ref().map(|r| r.state), Some(JobState::Revoked));
    let w = worker(&s).await;
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "a revoked job never starts");
    assert!(get(&s, queued).await.steps.iter().all(|st| st.state == StepState::Revoked));

    // A running job with terminate: its attempt is flagged and returned.
    let running = submit(&s, JobSpec::new(vec![step("a")]), at(3)).await;
    let a = claim_one(&s, w, at(4)).await;
    let out = s.revoke_jobs(vec![revoke(running, true, None)], at(5)).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(
        out.running.iter().map(|r| (r.attempt_id, r.cause)).collect::<Vec<_>>(),
        [(a.attempt_id, StopCause::Revoked)]
    );

    // Expiring revokes are pruned once expired; revokes without expiry stay.
    let expiring = submit(&s, JobSpec::new(vec![step("a")]), at(6)).await;
    s.revoke_jobs(vec![revoke(expiring, false, Some(at(100)))], at(7)).await.unwrap().pop().unwrap().unwrap();
    let ids: Vec<JobId> = s.list_revokes(at(8)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert!(ids.contains(&expiring) && ids.contains(&queued) && ids.contains(&running), "{ids:?}");
    assert_eq!(s.prune_revokes(at(101)).await.unwrap(), 1);
    let ids: Vec<JobId> = s.list_revokes(at(102)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert!(!ids.contains(&expiring) && ids.contains(&queued));
    assert_eq!(
        get(&s, expiring).await.row.state,
        JobState::Revoked,
        "pruning a revoke does not revive its job"
    );
    // Revoking an ended job records the revoke and changes nothing.
    let out = s.revoke_jobs(vec![revoke(queued, true, None)], at(103)).await.unwrap().pop().unwrap().unwrap();
    assert!(!out.changed);
}

pub(super) async fn revoke_of_an_unknown_job_is_not_found(s: Arc<dyn JobStore>) {
    // Ids are issued at submit: a revoke of an id never issued could never match.
    let known = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let unknown = new_id();
    let out = s
        .revoke_jobs(vec![revoke(unknown, false, Some(at(100))), revoke(known, false, None)], at(1))
        .await
        .unwrap();
    match &out[0] {
        Err(StoreError::NotFound(m)) => assert!(m.contains(&unknown.to_string()), "{m}"),
        other => panic!("expected NotFound for an unknown id, got {other:?}"),
    }
    assert!(out[1].as_ref().is_ok_and(|o| o.changed), "the known job in the same call is revoked");
    let ids: Vec<JobId> = s.list_revokes(at(2)).await.unwrap().iter().map(|r| r.job_id).collect();
    assert_eq!(ids, [known], "nothing is stored for the unknown id");
    // A job later stored under that id (only a test can choose ids) is not bound by it.
    let later = s
        .submit_jobs(vec![NewJob { id: unknown, spec: JobSpec::new(vec![step("a")]), now: at(3) }])
        .await
        .unwrap();
    assert!(later[0].is_ok());
    assert_eq!(get(&s, unknown).await.row.state, JobState::Queued);
}

fn key_revoke(key: &str, terminate: bool, expires_at: Option<DateTime<Utc>>) -> KeyRevokeRequest {
    KeyRevokeRequest { namespace: "default".into(), key: key.into(), terminate, signal: None, expires_at }
}

pub(super) async fn key_revokes_bind_later_jobs(s: Arc<dyn JobStore>) {
    // A key no job carries yet: stored, and binds the job submitted later with it.
    let out = s.revoke_keys(vec![key_revoke("nightly-1", false, None)], t0()).await.unwrap();
    assert!(out[0].as_ref().is_ok_and(|o| o.key == "nightly-1" && o.job.is_none()), "{out:?}");
    let id = submit(&s, keyed("nightly-1"), at(1)).await;
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Revoked, "a job submitted with a revoked key ends revoked");
    assert!(rec.steps.iter().all(|st| st.state == StepState::Revoked));
    let w = worker(&s).await;
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "it never starts");
    // Submitting the key again still answers with that job (idempotency holds).
    let again =
        s.submit_jobs(vec![NewJob { id: new_id(), spec: keyed("nightly-1"), now: at(3) }]).await.unwrap();
    assert_eq!(again[0].as_ref().map(|r| (r.id, r.created)).ok(), Some((id, false)));

    // A key a running job already carries: that job is revoked (and with terminate, stopped).
    let running = submit(&s, keyed("nightly-2"), at(4)).await;
    let a = claim_one(&s, w, at(5)).await;
    let out = s
        .revoke_keys(vec![key_revoke("nightly-2", true, None)], at(6))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = out.job.expect("the job carrying the key");
    assert_eq!(job.job_id, running);
    assert!(job.changed);
    assert_eq!(job.running.iter().map(|r| r.attempt_id).collect::<Vec<_>>(), [a.attempt_id]);

    // Expiry: an expired key revoke no longer binds, and is pruned.
    s.revoke_keys(vec![key_revoke("nightly-3", false, Some(at(100)))], at(7)).await.unwrap();
    let keys: Vec<String> = s.list_key_revokes(at(8)).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["nightly-3", "nightly-2", "nightly-1"], "newest first");
    assert!(s.list_key_revokes(at(101)).await.unwrap().iter().all(|r| r.key != "nightly-3"));
    assert_eq!(s.prune_revokes(at(101)).await.unwrap(), 1);
    let late = submit(&s, keyed("nightly-3"), at(102)).await;
    assert_eq!(get(&s, late).await.row.state, JobState::Queued, "an expired key revoke binds nothing");
}

pub(super) async fn revoke_without_terminate_lets_the_step_finish(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let out = s.revoke_jobs(vec![revoke(id, false, None)], at(2)).await.unwrap().pop().unwrap().unwrap();
    assert!(out.changed && out.running.is_empty(), "without terminate nothing is stopped");
    let hb = s
        .heartbeat(
            Heartbeat { session: w, attempts: vec![a.attempt_id], draining: false, concurrency: None },
            at(3),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(hb.stop.is_empty(), "the running step is not told to stop: {:?}", hb.stop);
    let rec = get(&s, id).await;
    assert_eq!(
        (rec.row.state, step_of(&rec, "a").state, step_of(&rec, "a").attempts[0].status),
        (JobState::Revoked, StepState::Revoked, AttemptStatus::Running),
        "the step shows the job's end at once while its attempt runs on"
    );
    assert_eq!(rec.row.finished_at, None, "an attempt still runs");
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(4)).await;
    let rec = get(&s, id).await;
    assert_eq!((rec.row.state, rec.row.finished_at), (JobState::Revoked, Some(at(4))));
    let a_rec = step_of(&rec, "a");
    assert_eq!(a_rec.state, StepState::Revoked, "the step keeps the state it showed");
    assert_eq!(a_rec.attempts[0].status, AttemptStatus::Succeeded, "the attempt records its own outcome");
    assert_eq!(step_of(&rec, "b").state, StepState::Revoked, "no later step starts");
    assert!(claim(&s, w, 5, at(5)).await.is_empty());
}
