//! Scenarios for worker sessions: supersession on re-register, names held by live instances,
//! unregister, and the workers listing.

use super::fixtures::{
    TTL, WorkerSpec, assert_not_found, at, claim, claim_one, get, register, registration, step, step_of,
    submit, t0,
};
use crate::{Heartbeat, JobStore, NameHolder, SessionStatus, StoreError, WorkerRegistration};
use rota_domain::{AttemptStatus, JobSpec, JobState, OnLost, SessionId};
use std::sync::Arc;

pub(super) async fn register_supersedes(s: Arc<dyn JobStore>) {
    let mut once = step("once");
    once.on_lost = OnLost::Fail;
    let fail_job = submit(&s, JobSpec::new(vec![once]), t0()).await;
    let retry_job = submit(&s, JobSpec::new(vec![step("again")]), t0()).await;
    let first_reg = registration(&WorkerSpec::default());
    let old = first_reg.session;
    let old_token = first_reg.token_hash.clone();
    let r = s.register_worker(first_reg, t0()).await.unwrap();
    assert!(r.superseded.is_none() && r.lost.is_empty());
    let got = claim(&s, old, 5, at(1)).await;
    assert_eq!(got.len(), 2);

    let new_reg = registration(&WorkerSpec::default());
    let new = new_reg.session;
    let new_token = new_reg.token_hash.clone();
    let r = s.register_worker(new_reg, at(2)).await.unwrap();
    assert_eq!(r.superseded, Some(old));
    let mut lost = r.lost.clone();
    lost.sort_by_key(|l| l.attempt_id);
    assert_eq!(lost.len(), 2);
    for l in &lost {
        assert_eq!(l.session, old);
        assert_eq!(l.retried, l.job_id == retry_job, "{l:?}");
    }
    let rec = get(&s, retry_job).await;
    let att = &step_of(&rec, "again").attempts[0];
    assert_eq!(att.status, AttemptStatus::Lost);
    assert!(att.reason.as_deref().is_some_and(|r| r.contains("superseded")), "{:?}", att.reason);
    assert_eq!(get(&s, fail_job).await.row.state, JobState::Failed);

    assert!(s.session_by_token(&old_token).await.unwrap().is_none(), "a superseded session is not live");
    let live = s.session_by_token(&new_token).await.unwrap().expect("the new session is live");
    assert_eq!((live.session, live.status, live.name.as_str()), (new, SessionStatus::Active, "w1"));
    let listed = s.list_workers().await.unwrap();
    assert_eq!(listed.iter().map(|w| w.session).collect::<Vec<_>>(), [new], "latest session per name");
    let again = registration(&WorkerSpec { name: "w9", ..WorkerSpec::default() });
    let dup = WorkerRegistration { token_hash: new_token, ..again };
    assert!(s.register_worker(dup, at(3)).await.is_err(), "a credential hash belongs to one session");
}

/// A registration of `name` on `host` by instance `instance`.
fn instance_registration(name: &str, host: &str, instance: Option<&str>) -> WorkerRegistration {
    WorkerRegistration {
        instance_id: instance.map(str::to_string),
        ..registration(&WorkerSpec { name, host, ..WorkerSpec::default() })
    }
}

fn heartbeat_of(session: SessionId) -> Heartbeat {
    Heartbeat { session, attempts: Vec::new(), draining: false, concurrency: None }
}

pub(super) async fn names_are_held_by_live_instances(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let first = instance_registration("vm", "h1", Some("inst-a"));
    let (a, a_token) = (first.session, first.token_hash.clone());
    s.register_worker(first, t0()).await.unwrap();
    let held = claim_one(&s, a, at(1)).await;
    assert_eq!(held.job_id, id);

    // Another instance, same name, while the holder is live: refused, nothing written.
    let intruder = instance_registration("vm", "h2", Some("inst-b"));
    let intruder_token = intruder.token_hash.clone();
    match s.register_worker(intruder.clone(), at(5)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!(
            *h,
            NameHolder {
                name: "vm".into(),
                session: a,
                instance_id: Some("inst-a".into()),
                host: "h1".into(),
                last_heartbeat_at: t0(),
            },
            "the refusal names the live holder"
        ),
        other => panic!("another instance must be refused the live name: {other:?}"),
    }
    assert!(s.session_by_token(&intruder_token).await.unwrap().is_none(), "a refused session is not stored");
    assert!(s.session_by_token(&a_token).await.unwrap().is_some(), "the holder keeps its session");
    let rec = get(&s, id).await;
    assert_eq!(step_of(&rec, "a").attempts[0].status, AttemptStatus::Running, "the holder keeps its step");
    // The same instance id on another host (a copied workspace) is another instance too.
    let clone = instance_registration("vm", "h2", Some("inst-a"));
    assert!(matches!(s.register_worker(clone, at(5)).await, Err(StoreError::NameHeld(_))));
    // A heartbeat keeps the holder live past the first TTL.
    s.heartbeat(heartbeat_of(a), at(25), TTL).await.unwrap();
    match s.register_worker(instance_registration("vm", "h2", Some("inst-b")), at(50)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!(h.last_heartbeat_at, at(25)),
        other => panic!("a holder heard from 25 s ago (TTL 30 s) is live: {other:?}"),
    }

    // The same instance on the same host (a restart): supersedes, the old attempts are lost.
    let restart = instance_registration("vm", "h1", Some("inst-a"));
    let b = restart.session;
    let r = s.register_worker(restart, at(51)).await.unwrap();
    assert_eq!(r.superseded, Some(a));
    assert_eq!(r.lost.iter().map(|l| l.attempt_id).collect::<Vec<_>>(), [held.attempt_id]);
    assert!(s.session_by_token(&a_token).await.unwrap().is_none());

    // --replace: another instance takes the live name on purpose.
    let mut replace = instance_registration("vm", "h2", Some("inst-b"));
    replace.replace = true;
    let c = replace.session;
    let r = s.register_worker(replace, at(52)).await.unwrap();
    assert_eq!(r.superseded, Some(b));
    let listed = s.list_workers().await.unwrap();
    let vm = listed.iter().find(|w| w.name == "vm").unwrap();
    assert_eq!((vm.session, vm.host.as_str(), vm.instance_id.as_deref()), (c, "h2", Some("inst-b")));
    // ... and the instance it replaced cannot take it back while the new one is live.
    match s.register_worker(instance_registration("vm", "h1", Some("inst-a")), at(53)).await {
        Err(StoreError::NameHeld(h)) => assert_eq!((h.session, h.host.as_str()), (c, "h2")),
        other => panic!("the replaced instance must be refused: {other:?}"),
    }

    // A stale holder (not heard from for the TTL) no longer holds the name.
    let after_ttl = at(52) + chrono::Duration::from_std(TTL).unwrap() + chrono::Duration::seconds(1);
    let r = s.register_worker(instance_registration("vm", "h1", Some("inst-a")), after_ttl).await.unwrap();
    assert_eq!(r.superseded, Some(c), "a stale session is superseded");

    // Sessions without an instance id (older workers, or registered before the upgrade)
    // prove nothing: they supersede and are superseded as before.
    let old = register(&s, WorkerSpec { name: "legacy", ..WorkerSpec::default() }, t0()).await;
    let r = s.register_worker(instance_registration("legacy", "h9", Some("new")), at(1)).await.unwrap();
    assert_eq!(r.superseded, Some(old), "an upgraded worker replaces its old session");
    let r = s.register_worker(instance_registration("legacy", "h8", None), at(2)).await.unwrap();
    assert!(r.superseded.is_some(), "a worker without an instance id supersedes as before");
}

pub(super) async fn unregister_loses_attempts(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let reg = registration(&WorkerSpec::default());
    let (w, token) = (reg.session, reg.token_hash.clone());
    s.register_worker(reg, t0()).await.unwrap();
    let a = claim_one(&s, w, at(1)).await;
    let lost = s.unregister_worker(w, at(2)).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].attempt_id, lost[0].job_id, lost[0].retried), (a.attempt_id, id, true));
    assert!(s.session_by_token(&token).await.unwrap().is_none());
    let listed = s.list_workers().await.unwrap();
    assert_eq!(
        listed.iter().map(|w| (w.session, w.status)).collect::<Vec<_>>(),
        [(w, SessionStatus::Offline)]
    );
    assert_eq!(get(&s, id).await.row.state, JobState::Queued, "the step will run again");
    assert_not_found(s.unregister_worker(SessionId::new(), at(3)).await, "unregister an unknown session");
}

pub(super) async fn workers_listing(s: Arc<dyn JobStore>) {
    submit(&s, JobSpec::new(vec![step("a"), step("b")]), t0()).await;
    let zed = register(&s, WorkerSpec { name: "zed", ..WorkerSpec::default() }, t0()).await;
    let gone = register(&s, WorkerSpec { name: "able", ..WorkerSpec::default() }, t0()).await;
    let mid = register(&s, WorkerSpec { name: "mid", host: "h2", ..WorkerSpec::default() }, t0()).await;
    assert_eq!(claim(&s, zed, 2, at(1)).await.len(), 2);
    s.unregister_worker(gone, at(2)).await.unwrap();
    let listed = s.list_workers().await.unwrap();
    let order: Vec<(&str, SessionStatus, u32)> =
        listed.iter().map(|w| (w.name.as_str(), w.status, w.running)).collect();
    assert_eq!(
        order,
        [
            ("mid", SessionStatus::Active, 0),
            ("zed", SessionStatus::Active, 2),
            ("able", SessionStatus::Offline, 0)
        ],
        "live first, then by name"
    );
    let m = listed.iter().find(|w| w.session == mid).unwrap();
    assert_eq!(
        (m.host.as_str(), m.queues.clone(), m.registered_at),
        ("h2", vec!["default".to_string()], t0())
    );
    assert_eq!(m.last_heartbeat_at, t0(), "registration counts as a heartbeat");
}

/// A pool's queues reach a live session at once: claims after the change take from them,
/// an offline or unknown session is refused.
pub(super) async fn queues_change_for_a_live_session(s: Arc<dyn JobStore>) {
    let mut spec = JobSpec::new(vec![step("x")]);
    spec.queue = "extra".into();
    let job = submit(&s, spec, t0()).await;
    let me = register(&s, WorkerSpec { name: "wq", ..WorkerSpec::default() }, t0()).await;
    assert!(claim(&s, me, 5, at(1)).await.is_empty(), "not yet one of its queues");
    assert!(s.set_worker_queues(me, vec!["default".into(), "extra".into()]).await.unwrap());
    let got = claim(&s, me, 5, at(2)).await;
    assert_eq!(got.iter().map(|c| c.job_id).collect::<Vec<_>>(), [job]);
    let listed = s.list_workers().await.unwrap();
    let w = listed.iter().find(|w| w.session == me).expect("listed");
    assert_eq!(w.queues, ["default", "extra"]);
    assert!(!s.set_worker_queues(SessionId::new(), vec!["a".into()]).await.unwrap(), "unknown session");
    s.unregister_worker(me, at(3)).await.unwrap();
    assert!(!s.set_worker_queues(me, vec!["a".into()]).await.unwrap(), "offline session");
}

/// `forget_worker` ends the name's live session at once: offline, its attempt lost and
/// retried, its credential known as forgotten (and not as live); without a block the name
/// registers again; with one it is refused (nothing written) until unblocked. Forgetting a
/// name never seen says so.
pub(super) async fn forget_ends_sessions_and_blocks(s: Arc<dyn JobStore>) {
    let id = submit(&s, JobSpec::new(vec![step("a")]), t0()).await;
    let reg = registration(&WorkerSpec::default());
    let (w, token) = (reg.session, reg.token_hash.clone());
    s.register_worker(reg, t0()).await.unwrap();
    let a = claim_one(&s, w, at(1)).await;
    assert!(!s.is_forgotten(&token).await.unwrap(), "a live credential is not forgotten");

    let out = s.forget_worker("default", "w1", false, at(2)).await.unwrap();
    assert!(out.known && !out.blocked);
    assert_eq!(out.sessions, [w]);
    assert_eq!(out.lost.len(), 1);
    assert_eq!((out.lost[0].attempt_id, out.lost[0].job_id, out.lost[0].retried), (a.attempt_id, id, true));
    assert!(s.session_by_token(&token).await.unwrap().is_none(), "the credential no longer works");
    assert!(s.is_forgotten(&token).await.unwrap(), "and is known as forgotten");
    let job = get(&s, id).await;
    assert_eq!(job.row.state, JobState::Queued, "the step will run again");
    let lost = &step_of(&job, "a").attempts[0];
    assert_eq!(lost.status, AttemptStatus::Lost);

    // Not blocked: the same name registers again (the join token is enough).
    let again = registration(&WorkerSpec::default());
    let w2 = again.session;
    s.register_worker(again, at(3)).await.unwrap();
    let b = claim_one(&s, w2, at(4)).await;
    assert_eq!(b.job_id, id, "the lost step runs on the new session");

    // Blocked: the live session ends, and the name may not register until unblocked.
    let out = s.forget_worker("default", "w1", true, at(5)).await.unwrap();
    assert_eq!((out.sessions.as_slice(), out.blocked), ([w2].as_slice(), true));
    let refused = s.register_worker(registration(&WorkerSpec::default()), at(6)).await;
    match refused {
        Err(StoreError::Conflict(crate::ConflictKind::Blocked, m)) => assert!(m.contains("unblock"), "{m}"),
        other => panic!("a blocked name registered: {other:?}"),
    }
    let other_ns = WorkerRegistration { namespace: "other".into(), ..registration(&WorkerSpec::default()) };
    s.register_worker(other_ns, at(6)).await.expect("the block is per namespace");
    assert!(s.unblock_worker("default", "w1").await.unwrap());
    assert!(!s.unblock_worker("default", "w1").await.unwrap(), "already unblocked");
    s.register_worker(registration(&WorkerSpec::default()), at(7)).await.expect("unblocked");

    let none = s.forget_worker("default", "never-seen", false, at(8)).await.unwrap();
    assert!(!none.known && none.sessions.is_empty());
}
