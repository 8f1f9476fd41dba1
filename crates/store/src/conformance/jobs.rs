//! Scenarios for submitting and reading jobs: idempotency keys, batch submits, listing and
//! getting, DAG readiness. Claims beyond what readiness needs live in `claims.rs`.

use super::fixtures::{
    assert_not_found, at, claim, claim_one, finish, get, needs, new_id, step, step_of, steps_of, submit, t0,
    worker,
};
use crate::{JobFilter, JobStore, NewJob};
use rota_domain::{AttemptOutcome, AttemptStatus, JobSpec, JobState, StepState};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) async fn submit_and_idempotency(s: Arc<dyn JobStore>) {
    let mut spec = JobSpec::new(vec![step("a")]);
    spec.idempotency_key = Some("key-1".into());
    let first = submit(&s, spec.clone(), t0()).await;
    let again = s.submit_jobs(vec![NewJob { id: new_id(), spec: spec.clone(), now: at(1) }]).await.unwrap();
    let again = again[0].as_ref().expect("repeat with the same key");
    assert_eq!((again.id, again.created), (first, false), "same idempotency key must return the first job");

    // A batch: a new key, a repeat of a key seen earlier in the same batch, and a duplicate
    // id. One failing item never fails the others.
    let mut keyed = JobSpec::new(vec![step("a")]);
    keyed.idempotency_key = Some("key-2".into());
    let dup_id = new_id();
    let batch = vec![
        NewJob { id: dup_id, spec: keyed.clone(), now: at(2) },
        NewJob { id: new_id(), spec: keyed, now: at(2) },
        NewJob { id: dup_id, spec: JobSpec::new(vec![step("b")]), now: at(2) },
        NewJob { id: new_id(), spec: JobSpec::new(vec![step("c")]), now: at(2) },
    ];
    let out = s.submit_jobs(batch).await.expect("submit batch");
    assert_eq!(out.len(), 4, "one result per job");
    assert_eq!(out[0].as_ref().map(|r| (r.id, r.created)).ok(), Some((dup_id, true)));
    assert_eq!(out[1].as_ref().map(|r| (r.id, r.created)).ok(), Some((dup_id, false)));
    assert!(out[2].is_err(), "a duplicate job id must be refused: {:?}", out[2]);
    let last = out[3].as_ref().expect("the item after a failed one is stored");
    assert!(last.created);
    let rec = get(&s, last.id).await;
    assert_eq!(rec.spec.steps[0].name, "c");
    let rec = get(&s, dup_id).await;
    assert_eq!(rec.spec.steps[0].name, "a", "the refused duplicate must not overwrite the first job");
}

pub(super) async fn list_and_get(s: Arc<dyn JobStore>) {
    let mut first = JobSpec::new(vec![step("a"), needs(step("b"), &["a"]), step("c")]);
    first.name = Some("first".into());
    first.env = BTreeMap::from([("K".into(), "V".into())]);
    let a = submit(&s, first.clone(), t0()).await;
    let mut other = JobSpec::new(vec![step("x")]);
    other.queue = "other".into();
    other.priority = 7;
    let b = submit(&s, other, at(1)).await;

    let rec = get(&s, a).await;
    assert_eq!(rec.spec, first, "the stored document must come back as submitted");
    assert_eq!(rec.row.state, JobState::Queued);
    assert_eq!(rec.row.name.as_deref(), Some("first"));
    assert_eq!(rec.row.created_at, t0());
    assert_eq!(rec.row.finished_at, None);
    let names: Vec<&str> = rec.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "steps in document order");
    let states: Vec<StepState> = rec.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, [StepState::Ready, StepState::Waiting, StepState::Ready]);
    assert!(rec.steps.iter().all(|s| s.attempts.is_empty() && s.run_after.is_none()));
    assert_eq!((rec.row.counts.total, rec.row.counts.succeeded, rec.row.counts.running), (3, 0, 0));

    let all = s.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a], "newest first");
    let other_q =
        s.list_jobs(&JobFilter { queue: Some("other".into()), ..JobFilter::default() }).await.unwrap();
    assert_eq!(other_q.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);
    assert_eq!((other_q[0].priority, other_q[0].queue.as_str()), (7, "other"));
    let limited = s.list_jobs(&JobFilter { limit: 1, ..JobFilter::default() }).await.unwrap();
    assert_eq!(limited.len(), 1);
    let none =
        s.list_jobs(&JobFilter { states: vec![JobState::Running], ..JobFilter::default() }).await.unwrap();
    assert!(none.is_empty());
    let queued = s
        .list_jobs(&JobFilter { states: vec![JobState::Queued, JobState::Failed], ..JobFilter::default() })
        .await
        .unwrap();
    assert_eq!(queued.len(), 2);

    // Search by name (a part of it), a schedule's runs, and keyset paging.
    let named = s.list_jobs(&JobFilter { name: Some("irs".into()), ..JobFilter::default() }).await.unwrap();
    assert_eq!(named.iter().map(|r| r.id).collect::<Vec<_>>(), [a], "name contains 'irs'");
    let mut fired = JobSpec::new(vec![step("r")]);
    fired.idempotency_key = Some(crate::schedules::fire_key("nightly", at(60)));
    let c = submit(&s, fired, at(2)).await;
    let mut near = JobSpec::new(vec![step("r")]);
    near.idempotency_key = Some("schedule/nightly-x/2030-01-01T00:00:00Z".into());
    let d = submit(&s, near, at(3)).await;
    let runs =
        s.list_jobs(&JobFilter { schedule: Some("nightly".into()), ..JobFilter::default() }).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [c],
        "only the runs of `nightly`, not `nightly-x`"
    );
    let page1 = s.list_jobs(&JobFilter { limit: 2, ..JobFilter::default() }).await.unwrap();
    assert_eq!(page1.iter().map(|r| r.id).collect::<Vec<_>>(), [d, c]);
    // A job submitted after the first page was read does not shift the next page.
    submit(&s, JobSpec::new(vec![step("late")]), at(4)).await;
    let page2 = s.list_jobs(&JobFilter { limit: 2, before: Some(c), ..JobFilter::default() }).await.unwrap();
    assert_eq!(page2.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a], "the page after `c`");

    assert_not_found(s.get_job(new_id()).await, "get_job of an unknown id");
}

/// Jobs ended per minute by state, and submit→start latency per minute of first start.
pub(super) async fn throughput_per_minute(s: Arc<dyn JobStore>) {
    let w = worker(&s).await;
    // Minute 0: one job starts 2 s after its submit and succeeds; another fails.
    let ok = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let bad = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let c1 = claim_one(&s, w, at(2)).await;
    let c2 = claim_one(&s, w, at(4)).await;
    finish(&s, w, &c1, AttemptOutcome::Succeeded, at(5)).await;
    finish(&s, w, &c2, super::fixtures::failed(1), at(6)).await;
    // Minute 1: a job submitted at 60 s starts at 70 s and succeeds at 75 s.
    let later = submit(&s, JobSpec::new(vec![step("a")]), at(60)).await;
    let c3 = claim_one(&s, w, at(70)).await;
    finish(&s, w, &c3, AttemptOutcome::Succeeded, at(75)).await;
    assert_eq!([c1.job_id, c2.job_id, c3.job_id], [ok, bad, later]);

    let t = s.throughput(t0(), None).await.unwrap();
    // Minutes start on the minute (t0 is 40 s into one).
    let m0 = t0() - chrono::Duration::seconds(t0().timestamp() % 60);
    let finished: Vec<(i64, JobState, u64)> =
        t.finished.iter().map(|f| ((f.minute - m0).num_seconds(), f.state, f.jobs)).collect();
    assert_eq!(
        finished,
        [(0, JobState::Failed, 1), (0, JobState::Succeeded, 1), (60, JobState::Succeeded, 1)]
    );
    let latency: Vec<(i64, u64, u64)> =
        t.latency.iter().map(|l| ((l.minute - m0).num_seconds(), l.started, l.max_ms)).collect();
    assert_eq!(latency, [(0, 2, 4000), (60, 1, 10_000)]);
    assert!((t.latency[0].mean_ms - 3000.0).abs() < 1.0, "mean of 2 s and 4 s: {}", t.latency[0].mean_ms);
    // Since minute 1, and of a namespace with no jobs.
    let since = s.throughput(at(60), None).await.unwrap();
    assert_eq!((since.finished.len(), since.latency.len()), (1, 1));
    let other = s.throughput(t0(), Some("elsewhere")).await.unwrap();
    assert_eq!(other, crate::Throughput::default());
}

pub(super) async fn dag_readiness(s: Arc<dyn JobStore>) {
    let spec = JobSpec::new(vec![
        step("a"),
        needs(step("b"), &["a"]),
        needs(step("c"), &["a"]),
        needs(step("d"), &["b", "c"]),
    ]);
    let id = submit(&s, spec, t0()).await;
    let w = worker(&s).await;

    let first = claim(&s, w, 10, at(1)).await;
    assert_eq!(steps_of(&first), ["a"], "only the root is claimable");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Running);
    assert_eq!(step_of(&rec, "a").state, StepState::Running);
    let done = finish(&s, w, &first[0], AttemptOutcome::Succeeded, at(2)).await;
    assert_eq!((done.readied, done.job_finished, done.repeated), (2, false, false));
    assert_eq!(done.status, AttemptStatus::Succeeded);

    let mid = claim(&s, w, 10, at(3)).await;
    assert_eq!(steps_of(&mid), ["b", "c"]);
    let b = mid.iter().find(|c| c.step == "b").unwrap();
    let c = mid.iter().find(|c| c.step == "c").unwrap();
    assert_eq!(finish(&s, w, b, AttemptOutcome::Succeeded, at(4)).await.readied, 0);
    assert!(claim(&s, w, 10, at(5)).await.is_empty(), "d needs c too");
    assert_eq!(get(&s, id).await.row.state, JobState::Running);
    assert_eq!(finish(&s, w, c, AttemptOutcome::Succeeded, at(6)).await.readied, 1);

    let d = claim_one(&s, w, at(7)).await;
    assert_eq!(d.step, "d");
    let end = finish(&s, w, &d, AttemptOutcome::Succeeded, at(8)).await;
    assert!(end.job_finished, "the last step ends the job");
    assert_eq!(end.job_state, Some(JobState::Succeeded), "the completion says how the job ended");
    let rec = get(&s, id).await;
    assert_eq!(rec.row.state, JobState::Succeeded);
    assert_eq!(rec.row.finished_at, Some(at(8)));
    assert!(rec.row.reason.is_some(), "a terminal job has a reason");
    assert_eq!((rec.row.counts.total, rec.row.counts.succeeded), (4, 4));
    let a = &step_of(&rec, "a").attempts;
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].number, a[0].status, a[0].exit_code()), (1, AttemptStatus::Succeeded, Some(0)));
    assert_eq!((a[0].started_at, a[0].finished_at), (at(1), Some(at(2))));
    assert_eq!(a[0].session, w);
    assert_eq!(a[0].worker, "w1");
}
