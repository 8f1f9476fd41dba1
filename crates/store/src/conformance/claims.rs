//! Scenarios for claiming: queues, targets (host, name, tags), priority and age order, `max`,
//! session state, `submit_and_claim` and `complete_and_claim`. What happens after a claim
//! lives elsewhere.

use super::fixtures::{
    TTL, WorkerSpec, at, claim, claim_one, completion, get, needs, new_id, register, step, step_of, submit,
    t0, worker,
};
use crate::{Claimer, Heartbeat, JobStore, NewJob, StoreError};
use rota_domain::spec::DEFAULT_LOG_CAP;
use rota_domain::{AttemptOutcome, AttemptStatus, JobId, JobSpec, JobState, SessionId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn claim_respects_queues(s: Arc<dyn JobStore>) {
    let mut gpu = JobSpec::new(vec![step("train")]);
    gpu.queue = "gpu".into();
    let id = submit(&s, gpu, t0()).await;
    let plain = worker(&s).await;
    assert!(
        claim(&s, plain, 5, at(1)).await.is_empty(),
        "a worker must not claim from queues it does not serve"
    );
    let both =
        register(&s, WorkerSpec { name: "w2", queues: &["default", "gpu"], ..WorkerSpec::default() }, t0())
            .await;
    let got = claim_one(&s, both, at(2)).await;
    assert_eq!((got.job_id, got.step.as_str()), (id, "train"));

    // Across several queues the order is still priority, then age.
    let mut order = Vec::new();
    for (queue, priority) in [("gpu", 1), ("default", 5), ("gpu", 5), ("default", 0), ("gpu", 0)] {
        let mut j = JobSpec::new(vec![step("s")]);
        (j.queue, j.priority) = (queue.to_string(), priority);
        order.push(submit(&s, j, at(3)).await);
    }
    let got: Vec<JobId> = claim(&s, both, 10, at(4)).await.iter().map(|c| c.job_id).collect();
    assert_eq!(got, [order[1], order[2], order[0], order[3], order[4]]);
}

pub(super) async fn claim_respects_targets(s: Arc<dyn JobStore>) {
    let mut on_web1 = JobSpec::new(vec![step("a")]);
    on_web1.target.host = Some("web1".into());
    let host_job = submit(&s, on_web1, t0()).await;
    let mut on_name = JobSpec::new(vec![step("a")]);
    on_name.target.host = Some("builder".into());
    let name_job = submit(&s, on_name, t0()).await;
    let mut tagged = JobSpec::new(vec![step("a")]);
    tagged.target.tags = vec!["ssd".into(), "x86".into()];
    let tag_job = submit(&s, tagged, t0()).await;

    let elsewhere =
        register(&s, WorkerSpec { name: "other", host: "db1", ..WorkerSpec::default() }, t0()).await;
    assert!(claim(&s, elsewhere, 10, at(1)).await.is_empty(), "no job targets this worker");

    let web1 = register(
        &s,
        WorkerSpec { name: "w-web", host: "web1", tags: &["ssd"], ..WorkerSpec::default() },
        t0(),
    )
    .await;
    let got = claim(&s, web1, 10, at(2)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [host_job],
        "host matches; tags are all required"
    );

    let builder =
        register(&s, WorkerSpec { name: "builder", host: "h9", ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, builder, 10, at(3)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [name_job],
        "target host may name the worker"
    );

    let tags = &["x86", "ssd", "gpu"];
    let rich =
        register(&s, WorkerSpec { name: "rich", host: "h8", tags, ..WorkerSpec::default() }, t0()).await;
    let got = claim(&s, rich, 10, at(4)).await;
    assert_eq!(got.iter().map(|c| c.job_id).collect::<Vec<_>>(), [tag_job]);

    // Many higher-priority jobs this worker cannot take must not hide the one it can.
    for _ in 0..300 {
        let mut rare = JobSpec::new(vec![step("a")]);
        rare.priority = 10;
        rare.target.tags = vec!["rare".into()];
        submit(&s, rare, at(5)).await;
    }
    let reachable = submit(&s, JobSpec::new(vec![step("a")]), at(6)).await;
    let got = claim(&s, elsewhere, 10, at(7)).await;
    assert_eq!(
        got.iter().map(|c| c.job_id).collect::<Vec<_>>(),
        [reachable],
        "refused candidates must not starve"
    );
}

pub(super) async fn claim_order_priority_age_and_max(s: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for prio in [0, 5, 1, 5] {
        let mut j = JobSpec::new(vec![step("a")]);
        j.priority = prio;
        ids.push(submit(&s, j, t0()).await);
    }
    let w = worker(&s).await;
    let order: Vec<JobId> = claim(&s, w, 3, at(1)).await.iter().map(|c| c.job_id).collect();
    assert_eq!(order, [ids[1], ids[3], ids[2]], "priority first, then age; at most max");
    let rest = claim(&s, w, 3, at(2)).await;
    assert_eq!(rest.iter().map(|c| c.job_id).collect::<Vec<_>>(), [ids[0]]);
    assert!(claim(&s, w, 0, at(3)).await.is_empty());

    // Within a job, document order; and what the worker needs to run the step.
    let mut j = JobSpec::new(vec![step("x"), step("y")]);
    j.env = BTreeMap::from([("A".into(), "job".into()), ("B".into(), "job".into())]);
    j.steps[0].env = BTreeMap::from([("B".into(), "step".into())]);
    j.steps[0].timeout = Some(Duration::from_secs(90));
    j.steps[0].memory_limit = Some(1 << 20);
    j.steps[0].keep_workspace = true;
    j.steps[1].log_cap = Some(1000);
    let id = submit(&s, j, at(4)).await;
    let got = claim(&s, w, 2, at(5)).await;
    assert_eq!(got.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(), ["x", "y"]);
    let x = &got[0];
    assert_eq!((x.job_id, x.number, x.run.as_str()), (id, 1, "echo x"));
    assert_eq!(x.env, BTreeMap::from([("A".into(), "job".into()), ("B".into(), "step".into())]));
    assert_eq!(
        (x.timeout, x.memory_limit, x.keep_workspace),
        (Some(Duration::from_secs(90)), Some(1 << 20), true)
    );
    assert_eq!((x.log_cap, got[1].log_cap), (DEFAULT_LOG_CAP, 1000));
    assert!(got[1].attempt_id > x.attempt_id, "fencing ids increase");
    let rec = get(&s, id).await;
    let att = &step_of(&rec, "x").attempts[0];
    assert_eq!((att.status, att.lease_expires_at), (AttemptStatus::Running, Some(at(5) + TTL)));
}

pub(super) async fn claim_only_when_active(s: Arc<dyn JobStore>) {
    submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let hb = Heartbeat { session: w, attempts: vec![], draining: true, concurrency: None };
    s.heartbeat(hb, at(1), TTL).await.unwrap();
    assert!(claim(&s, w, 5, at(2)).await.is_empty(), "a draining session claims nothing");
    let hb = Heartbeat { session: w, attempts: vec![], draining: false, concurrency: None };
    s.heartbeat(hb, at(3), TTL).await.unwrap();
    assert_eq!(claim(&s, w, 5, at(4)).await.len(), 1, "active again");

    submit(&s, JobSpec::new(vec![step("b")]), at(5)).await;
    s.unregister_worker(w, at(6)).await.unwrap();
    assert!(claim(&s, w, 5, at(7)).await.is_empty(), "an offline session claims nothing");
}

pub(super) async fn submit_and_claim_hands_out_in_one_call(s: Arc<dyn JobStore>) {
    let w = worker(&s).await;
    let other_queue =
        register(&s, WorkerSpec { name: "w2", queues: &["gpu"], ..WorkerSpec::default() }, t0()).await;
    let unknown = SessionId::new();
    let (a, b) = (new_id(), new_id());
    let jobs = vec![
        NewJob { id: a, spec: JobSpec::new(vec![step("a")]), now: t0() },
        NewJob { id: b, spec: JobSpec::new(vec![step("b")]), now: t0() },
    ];
    let claimers = vec![
        Claimer { session: unknown, max: 4 },
        Claimer { session: other_queue, max: 4 },
        Claimer { session: w, max: 1 },
    ];
    let out = s.submit_and_claim(jobs, claimers, at(1), TTL).await.expect("submit_and_claim");
    assert_eq!(out.submitted.len(), 2);
    assert!(out.submitted.iter().all(|r| r.as_ref().is_ok_and(|x| x.created)), "{:?}", out.submitted);
    assert_eq!(out.claimed.len(), 3, "one result per claimer");
    assert!(matches!(out.claimed[0], Err(StoreError::NotFound(_))), "unknown session: {:?}", out.claimed[0]);
    assert!(out.claimed[1].as_ref().is_ok_and(Vec::is_empty), "no step for another queue");
    let got = out.claimed[2].as_ref().expect("claim for w");
    assert_eq!(got.len(), 1, "max is respected");
    assert_eq!(got[0].job_id, a, "oldest first");
    assert_eq!(get(&s, a).await.row.state, JobState::Running);
    assert_eq!(claim_one(&s, w, at(2)).await.job_id, b, "the rest stays claimable");
}

pub(super) async fn submit_and_claim_answers_a_bad_job_alone(s: Arc<dyn JobStore>) {
    let w = worker(&s).await;
    // A job already stored under the id the submit reuses, on a queue `w` does not serve.
    let taken = submit(&s, JobSpec { queue: "gpu".into(), ..JobSpec::new(vec![step("x")]) }, t0()).await;
    let (a, c) = (new_id(), new_id());
    let jobs = vec![
        NewJob { id: a, spec: JobSpec::new(vec![step("a")]), now: t0() },
        NewJob { id: taken, spec: JobSpec::new(vec![step("b")]), now: t0() },
        NewJob { id: c, spec: JobSpec::new(vec![step("c")]), now: t0() },
    ];
    let out = s
        .submit_and_claim(jobs, vec![Claimer { session: w, max: 4 }], at(1), TTL)
        .await
        .expect("submit_and_claim");
    assert!(out.submitted[0].as_ref().is_ok_and(|x| x.created), "{:?}", out.submitted);
    assert!(matches!(out.submitted[1], Err(StoreError::Conflict(..))), "taken id: {:?}", out.submitted[1]);
    assert!(out.submitted[2].as_ref().is_ok_and(|x| x.created), "{:?}", out.submitted);
    let mut got: Vec<JobId> =
        out.claimed[0].as_ref().expect("claim for w").iter().map(|x| x.job_id).collect();
    got.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(got, want, "the good jobs are stored and handed out in the same call");
    assert_eq!(get(&s, taken).await.spec.queue, "gpu", "the stored job is untouched");
}

pub(super) async fn complete_and_claim_fills_the_freed_slot(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a"), needs(step("b"), &["a"])]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    let done = vec![completion(w, &a, AttemptOutcome::Succeeded)];
    let out = s.complete_and_claim(done, Claimer { session: w, max: 1 }, at(2), TTL).await.expect("call");
    assert_eq!(out.completed.len(), 1);
    assert!(out.completed[0].as_ref().is_ok_and(|r| !r.repeated), "{:?}", out.completed);
    let got = out.claimed.expect("claim");
    assert_eq!(got.len(), 1, "the claim sees the step the completion readied");
    assert_eq!((got[0].job_id, got[0].step.as_str()), (id, "b"));
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].status, AttemptStatus::Succeeded);
    assert_eq!(step_of(&rec, "b").attempts[0].status, AttemptStatus::Running);

    // `max` 0 claims nothing; a refused completion still lets the claim run.
    submit(&s, JobSpec::new(vec![step("c")]), at(3)).await;
    let done = vec![completion(w, &got[0], AttemptOutcome::Succeeded)];
    let out = s.complete_and_claim(done, Claimer { session: w, max: 0 }, at(4), TTL).await.expect("call");
    assert!(out.completed[0].is_ok() && out.claimed.as_ref().is_ok_and(Vec::is_empty), "{out:?}");
    let stale =
        vec![completion(w, &a, AttemptOutcome::Failed { exit_code: Some(1), signal: None, why: None })];
    let out = s.complete_and_claim(stale, Claimer { session: w, max: 1 }, at(5), TTL).await.expect("call");
    assert!(out.completed[0].is_err(), "another outcome for a recorded attempt: {out:?}");
    let c = out.claimed.expect("claim");
    assert_eq!(c.len(), 1);

    // A draining session's completion is recorded and claims nothing.
    submit(&s, JobSpec::new(vec![step("d")]), at(6)).await;
    let hb = Heartbeat { session: w, attempts: vec![c[0].attempt_id], draining: true, concurrency: None };
    s.heartbeat(hb, at(7), TTL).await.unwrap();
    let done = vec![completion(w, &c[0], AttemptOutcome::Succeeded)];
    let out = s.complete_and_claim(done, Claimer { session: w, max: 1 }, at(8), TTL).await.expect("call");
    assert!(out.completed[0].is_ok(), "{out:?}");
    assert!(out.claimed.as_ref().is_ok_and(Vec::is_empty), "a draining session claims nothing: {out:?}");

    // An unknown session's claim fails on its own.
    let out =
        s.complete_and_claim(Vec::new(), Claimer { session: SessionId::new(), max: 1 }, at(9), TTL).await;
    assert!(matches!(out.expect("call").claimed, Err(StoreError::NotFound(_))));
}
