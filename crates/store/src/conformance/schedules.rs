//! Conformance scenarios for schedule fires: each fire time is recorded once (a second
//! recording returns the first, writing nothing), a run stores its job in the same call
//! under the fire's idempotency key (a job already stored under that key is adopted, never
//! doubled), bad batches write nothing, listings are newest first and filtered, pruning
//! keeps each schedule's newest fire; and two
//! recorders racing over the same fire times (a leader change) agree on every record and
//! start at most one job per fire time. Through the trait only.

use super::fixtures::{at, new_id, step};
use crate::schedules::{FireFilter, FireRecord, NewFire, NewOutcome, fire_key};
use crate::{JobFilter, JobStore, NewJob, StoreError};
use chrono::{DateTime, Utc};
use rota_domain::JobSpec;
use rota_domain::schedule::FireOutcome;
use std::collections::BTreeMap;
use std::sync::Arc;

fn run(schedule: &str, fire: DateTime<Utc>) -> NewFire {
    let mut spec = JobSpec::new(vec![step("a")]);
    spec.idempotency_key = Some(fire_key(schedule, fire));
    let job = NewJob { id: new_id(), spec, now: fire };
    NewFire {
        namespace: "default".into(),
        schedule: schedule.into(),
        fire_time: fire,
        outcome: NewOutcome::Run(Box::new(job)),
    }
}

fn not_run(schedule: &str, fire: DateTime<Utc>, outcome: NewOutcome) -> NewFire {
    NewFire { namespace: "default".into(), schedule: schedule.into(), fire_time: fire, outcome }
}

async fn jobs_of(s: &Arc<dyn JobStore>) -> usize {
    s.list_jobs(&JobFilter { limit: 1000, ..JobFilter::default() }).await.unwrap().len()
}

/// Run, skipped and missed are recorded once each; recording again returns the first
/// record; a pre-existing job under the fire's key is the fire's job; bad batches write
/// nothing; listings filter and come newest first.
pub(super) async fn schedules_record_each_fire_once(s: Arc<dyn JobStore>) {
    let first = s
        .record_fires(
            vec![
                not_run("nightly", at(0), NewOutcome::Missed),
                not_run("nightly", at(10), NewOutcome::Skipped),
                run("nightly", at(20)),
            ],
            at(21),
        )
        .await
        .unwrap();
    let outcomes: Vec<(FireOutcome, bool)> = first.iter().map(|r| (r.outcome, r.created)).collect();
    assert_eq!(
        outcomes,
        [(FireOutcome::Missed, true), (FireOutcome::Skipped, true), (FireOutcome::Run, true)]
    );
    let job = first[2].job_id.expect("a run has its job");
    let stored = s.get_job(job).await.unwrap();
    assert_eq!(stored.spec.idempotency_key.as_deref(), Some(fire_key("nightly", at(20)).as_str()));
    assert_eq!(first[2].recorded_at, at(21));

    // Again, as another leader would: the first records, nothing new.
    let again = s.record_fires(vec![run("nightly", at(0)), run("nightly", at(20))], at(30)).await.unwrap();
    assert_eq!((again[0].outcome, again[0].created, again[0].job_id), (FireOutcome::Missed, false, None));
    assert_eq!((again[1].outcome, again[1].created, again[1].job_id), (FireOutcome::Run, false, Some(job)));
    assert_eq!(again[1].recorded_at, at(21));
    assert_eq!(jobs_of(&s).await, 1, "no second job for a fire time");

    // A job already stored under the fire's key (started, then the leader died before
    // recording the fire) is adopted.
    let early = run("nightly", at(40));
    let NewOutcome::Run(ref j) = early.outcome else { unreachable!() };
    let adopted = s.submit_jobs(vec![(**j).clone()]).await.unwrap().remove(0).unwrap().id;
    let late = s.record_fires(vec![run("nightly", at(40))], at(41)).await.unwrap();
    assert_eq!((late[0].created, late[0].job_id), (true, Some(adopted)));
    assert_eq!(jobs_of(&s).await, 2);

    // Bad batches are refused whole.
    let twice = s.record_fires(vec![run("b", at(50)), run("b", at(50))], at(51)).await;
    assert!(matches!(twice, Err(StoreError::Invalid(_))), "{twice:?}");
    let mut wrong = run("b", at(60));
    if let NewOutcome::Run(j) = &mut wrong.outcome {
        j.spec.idempotency_key = Some("not-the-fire-key".into());
    }
    let bad = s.record_fires(vec![run("b", at(55)), wrong], at(61)).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    assert!(
        s.list_fires("default", "b", FireFilter::All, 10).await.unwrap().is_empty(),
        "nothing of a refused batch"
    );
    assert_eq!(jobs_of(&s).await, 2);

    let times = |v: Vec<FireRecord>| v.into_iter().map(|r| r.fire_time).collect::<Vec<_>>();
    assert_eq!(
        times(s.list_fires("default", "nightly", FireFilter::All, 10).await.unwrap()),
        [at(40), at(20), at(10), at(0)]
    );
    assert_eq!(times(s.list_fires("default", "nightly", FireFilter::All, 1).await.unwrap()), [at(40)]);
    assert_eq!(
        times(s.list_fires("default", "nightly", FireFilter::Runs, 10).await.unwrap()),
        [at(40), at(20)]
    );
    assert_eq!(
        times(s.list_fires("default", "nightly", FireFilter::NotRun, 10).await.unwrap()),
        [at(10), at(0)]
    );
    assert!(s.list_fires("default", "other", FireFilter::All, 10).await.unwrap().is_empty());

    // Pruning keeps each schedule's newest fire (due fire times count from it).
    s.record_fires(vec![not_run("solo", at(5), NewOutcome::Missed)], at(6)).await.unwrap();
    assert_eq!(s.prune_fires(at(21)).await.unwrap(), 0, "recorded at 21, not before");
    assert_eq!(s.prune_fires(at(22)).await.unwrap(), 3, "nightly's fires at 0, 10 and 20");
    assert_eq!(times(s.list_fires("default", "nightly", FireFilter::All, 10).await.unwrap()), [at(40)]);
    assert_eq!(times(s.list_fires("default", "solo", FireFilter::All, 10).await.unwrap()), [at(5)]);
    assert_eq!(s.prune_fires(at(1000)).await.unwrap(), 0, "the newest of each stays");
    assert_eq!(times(s.list_fires("default", "solo", FireFilter::All, 10).await.unwrap()), [at(5)]);
}

/// Three recorders race over the same 20 fire times, two running each and one recording
/// each as missed: every answer agrees per fire time, and there is one job per fire time
/// recorded as a run, no more.
pub(super) async fn schedules_racing_recorders_agree(s: Arc<dyn JobStore>) {
    let fires: Vec<DateTime<Utc>> = (0..20).map(|i| at(i * 2)).collect();
    let batch_runs = || fires.iter().map(|t| run("race", *t)).collect::<Vec<_>>();
    // The missed recorder goes newest first, so the racers meet in the middle.
    let batch_missed =
        fires.iter().rev().map(|t| not_run("race", *t, NewOutcome::Missed)).collect::<Vec<_>>();
    let (a, b, c) = tokio::join!(
        s.record_fires(batch_runs(), at(100)),
        s.record_fires(batch_runs(), at(100)),
        s.record_fires(batch_missed, at(100)),
    );
    let answers = [a.unwrap(), b.unwrap(), c.unwrap()];
    let mut by_time: BTreeMap<DateTime<Utc>, Vec<(FireOutcome, Option<rota_domain::JobId>)>> =
        BTreeMap::new();
    let mut created = 0;
    for answer in &answers {
        assert_eq!(answer.len(), fires.len());
        for r in answer {
            created += usize::from(r.created);
            by_time.entry(r.fire_time).or_default().push((r.outcome, r.job_id));
        }
    }
    assert_eq!(created, fires.len(), "each fire time is recorded by exactly one recorder");
    let mut runs = 0;
    for (t, seen) in &by_time {
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{t}: recorders disagree: {seen:?}");
        if seen[0].0 == FireOutcome::Run {
            runs += 1;
            let job = s.get_job(seen[0].1.expect("a run has its job")).await.unwrap();
            assert_eq!(job.spec.idempotency_key.as_deref(), Some(fire_key("race", *t).as_str()));
        }
    }
    let stored = s.list_fires("default", "race", FireFilter::All, 100).await.unwrap();
    assert_eq!(stored.len(), fires.len());
    assert_eq!(jobs_of(&s).await, runs, "one job per fire time recorded as a run, none for the others");
}
