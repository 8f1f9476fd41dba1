//! Scenario for retention: `prune_finished` removes ended jobs (and their logs) only.

use super::fixtures::{
    append, append_ok, assert_not_found, at, chunk, claim_one, finish, get, read_all, step, submit, t0,
    worker,
};
use crate::{JobFilter, JobStore, LogQuery, StopKind};
use rota_domain::{AttemptOutcome, JobId, JobSpec, JobState, Stream};
use std::sync::Arc;

pub(super) async fn prune(s: Arc<dyn JobStore>) {
    let done = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let live = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let recent = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let w = worker(&s).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.job_id, done);
    append_ok(&s, append(w, &a, vec![chunk(Stream::Stdout, 0, b"old output".to_vec())])).await;
    finish(&s, w, &a, AttemptOutcome::Succeeded, at(2)).await;
    let l = claim_one(&s, w, at(3)).await;
    append_ok(&s, append(w, &l, vec![chunk(Stream::Stdout, 0, b"live output".to_vec())])).await;
    s.stop_job(recent, StopKind::Cancel, at(1000)).await.unwrap();

    assert_eq!(s.prune_finished(at(2)).await.unwrap(), 0, "ended at the cutoff, not before it");
    assert_eq!(s.prune_finished(at(500)).await.unwrap(), 1);
    assert_not_found(s.get_job(done).await, "a pruned job");
    let q = LogQuery { job_id: done, step: None, after: 0, max_bytes: 1 << 20 };
    assert!(s.read_logs(&q).await.unwrap().chunks.is_empty(), "its logs are gone too");
    assert_eq!(get(&s, live).await.row.state, JobState::Running, "running jobs are never pruned");
    assert_eq!(read_all(&s, live, None, 1 << 20).await.len(), 1);
    assert_eq!(get(&s, recent).await.row.state, JobState::Cancelled);
    assert_eq!(s.prune_finished(at(500)).await.unwrap(), 0);
    let ids: Vec<JobId> = s.list_jobs(&JobFilter::default()).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, [recent, live]);
}
