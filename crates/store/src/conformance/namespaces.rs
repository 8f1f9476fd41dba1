//! Namespaces: a worker claims only its namespace's jobs; worker names, idempotency keys,
//! paused queues, key revokes, resources and schedule fires are per namespace; a revoke in
//! one namespace does not find a job of another. Also the check a backend's migration test
//! runs on a store the previous release wrote ([`before_namespaces_in_default`]).

use super::fixtures::*;
use crate::resources::{ResourceKey, ResourceWrite};
use crate::{JobFilter, JobStore, KeyRevokeRequest, NewJob, RevokeRequest, StoreError};
use rota_domain::JobSpec;
use rota_domain::resource::{Kind, Metadata};
use std::sync::Arc;

fn spec_in(ns: &str, key: Option<&str>) -> JobSpec {
    let mut spec = JobSpec::new(vec![step("a")]);
    spec.namespace = ns.into();
    spec.idempotency_key = key.map(str::to_string);
    spec
}

async fn submit_in(s: &Arc<dyn JobStore>, ns: &str, key: Option<&str>) -> crate::Submitted {
    let job = NewJob { id: new_id(), spec: spec_in(ns, key), now: t0() };
    s.submit_jobs(vec![job]).await.unwrap().pop().unwrap().unwrap()
}

async fn worker_in(s: &Arc<dyn JobStore>, ns: &str) -> rota_domain::SessionId {
    let mut reg = registration(&WorkerSpec::default());
    reg.namespace = ns.into();
    let session = reg.session;
    s.register_worker(reg, t0()).await.expect("two namespaces may each have a w1");
    session
}

pub(super) async fn namespaces_keep_apart(s: Arc<dyn JobStore>) {
    // One idempotency key, two namespaces: two jobs; again in `a`: a's job.
    let a = submit_in(&s, "a", Some("k")).await;
    let b = submit_in(&s, "b", Some("k")).await;
    assert!(a.created && b.created && a.id != b.id);
    let again = submit_in(&s, "a", Some("k")).await;
    assert_eq!((again.id, again.created), (a.id, false));

    // A worker named w1 in each; each claims its own namespace's job only.
    let wa = worker_in(&s, "a").await;
    let wb = worker_in(&s, "b").await;
    s.set_queue_paused("b", "default", true, at(1)).await.unwrap();
    let got = claim(&s, wa, 5, at(2)).await;
    assert_eq!(got.iter().map(|c| (c.job_id, c.namespace.as_str())).collect::<Vec<_>>(), [(a.id, "a")]);
    assert!(claim(&s, wb, 5, at(2)).await.is_empty(), "b's queue is paused, a's is not");
    s.set_queue_paused("b", "default", false, at(3)).await.unwrap();
    assert_eq!(claim(&s, wb, 5, at(4)).await.iter().map(|c| c.job_id).collect::<Vec<_>>(), [b.id]);

    // Listings by namespace, or of all.
    let ids = |ns: Option<&str>| {
        let f = JobFilter { namespace: ns.map(str::to_string), ..JobFilter::default() };
        let s = s.clone();
        async move { s.list_jobs(&f).await.unwrap().into_iter().map(|r| (r.id, r.namespace)).collect::<Vec<_>>() }
    };
    assert_eq!(ids(Some("a")).await, [(a.id, "a".to_string())]);
    assert_eq!(ids(None).await.len(), 2);
    let workers = s.list_workers().await.unwrap();
    let mut names: Vec<(&str, &str)> =
        workers.iter().map(|w| (w.namespace.as_str(), w.name.as_str())).collect();
    names.sort_unstable();
    assert_eq!(names, [("a", "w1"), ("b", "w1")]);
    let queues = s.queue_stats(Some("b")).await.unwrap();
    assert!(queues.iter().all(|q| q.namespace == "b"), "{queues:?}");

    // A revoke in `a` does not find b's job; a key revoke in `a` binds only a's key.
    let r = RevokeRequest {
        namespace: "a".into(),
        job_id: b.id,
        terminate: false,
        signal: None,
        expires_at: None,
    };
    let out = s.revoke_jobs(vec![r], at(5)).await.unwrap().pop().unwrap();
    assert!(matches!(out, Err(StoreError::NotFound(_))), "{out:?}");
    let kr = KeyRevokeRequest {
        namespace: "a".into(),
        key: "later".into(),
        terminate: false,
        signal: None,
        expires_at: None,
    };
    s.revoke_keys(vec![kr], at(6)).await.unwrap();
    let in_b = submit_in(&s, "b", Some("later")).await;
    assert_eq!(
        s.get_job(in_b.id).await.unwrap().row.state,
        rota_domain::JobState::Queued,
        "b's key is not revoked"
    );
    let in_a = submit_in(&s, "a", Some("later")).await;
    assert_eq!(s.get_job(in_a.id).await.unwrap().row.state, rota_domain::JobState::Revoked);

    // Resources: one name per kind per namespace.
    let wf = |ns: &str| ResourceWrite {
        kind: Kind::Workflow,
        metadata: Metadata { name: "deploy".into(), namespace: ns.into(), labels: Default::default() },
        spec: format!("{{\"ns\":\"{ns}\"}}"),
    };
    s.apply_resources(vec![wf("a"), wf("b")], at(7)).await.unwrap();
    let got = s.get_resource(&ResourceKey::new("b", Kind::Workflow, "deploy")).await.unwrap().unwrap();
    assert_eq!((got.metadata.namespace.as_str(), got.spec.as_str()), ("b", "{\"ns\":\"b\"}"));
    assert!(s.get_resource(&ResourceKey::new("c", Kind::Workflow, "deploy")).await.unwrap().is_none());
    assert_eq!(s.list_resources(Kind::Workflow, Some("a"), None, 10).await.unwrap().len(), 1);
    let all = s.list_resources(Kind::Workflow, None, None, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.metadata.namespace.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let after_a = s.list_resources(Kind::Workflow, None, Some(("a", "deploy")), 10).await.unwrap();
    assert_eq!(after_a.iter().map(|r| r.metadata.namespace.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        s.delete_resources(vec![ResourceKey::new("a", Kind::Workflow, "deploy")]).await.unwrap(),
        [true]
    );
    assert!(s.get_resource(&ResourceKey::new("b", Kind::Workflow, "deploy")).await.unwrap().is_some());
}

/// A store written by the release before namespaces (the backends' fixtures: jobs, one with
/// the key `keyed-1`, a worker `w1`, a paused queue `slow`, a key revoke `pending-key`, a
/// workflow `deploy`, a pool and a schedule), opened by this build: everything is in
/// `default`, and keys keep binding there only.
pub async fn before_namespaces_in_default(s: Arc<dyn JobStore>) {
    let all = s.list_jobs(&JobFilter { limit: 1000, ..JobFilter::default() }).await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|j| j.namespace == "default"), "{all:?}");
    let in_default = JobFilter { namespace: Some("default".into()), limit: 1000, ..JobFilter::default() };
    assert_eq!(s.list_jobs(&in_default).await.unwrap().len(), 4);
    let workers = s.list_workers().await.unwrap();
    assert_eq!(
        workers.iter().map(|w| (w.namespace.as_str(), w.name.as_str())).collect::<Vec<_>>(),
        [("default", "w1")]
    );
    let queues = s.queue_stats(Some("default")).await.unwrap();
    assert!(queues.iter().any(|q| q.queue == "slow" && q.paused), "{queues:?}");
    let keys = s.list_key_revokes(at(0)).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.namespace.as_str(), k.key.as_str())).collect::<Vec<_>>(),
        [("default", "pending-key")]
    );
    for kind in [Kind::Workflow, Kind::WorkerPool, Kind::Schedule] {
        let found = s.list_resources(kind, Some("default"), None, 10).await.unwrap();
        assert_eq!(found.len(), 1, "{kind}: {found:?}");
    }
    // The key an old job carries still names it in `default`, and only there.
    let again = submit_in(&s, "default", Some("keyed-1")).await;
    assert!(!again.created, "keyed-1 names the job stored before the migration");
    let elsewhere = submit_in(&s, "other", Some("keyed-1")).await;
    assert!(elsewhere.created, "another namespace has its own keys");
    // The old key revoke binds a new job of `default` with that key.
    let revoked = submit_in(&s, "default", Some("pending-key")).await;
    assert_eq!(s.get_job(revoked.id).await.unwrap().row.state, rota_domain::JobState::Revoked);
}
