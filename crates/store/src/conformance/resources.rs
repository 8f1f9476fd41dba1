//! Conformance scenarios for declared resources: an apply is created / unchanged /
//! configured with the generation rising only on a spec change; a batch is all or nothing
//! (one naming a resource twice writes nothing); deletes report what existed; a status is
//! recorded only for the generation it observed; concurrent applies of one new resource
//! agree on one generation; listings come in pages by name in byte order, the last name of a
//! page the cursor of the next. Through the trait only.

use crate::JobStore;
use crate::StoreError;
use crate::resources::{AppliedResource, ResourceKey, ResourceWrite};
use chrono::{DateTime, Utc};
use rota_domain::resource::{Applied, ConditionStatus, Kind, Metadata, Status};
use std::collections::BTreeMap;
use std::sync::Arc;

fn when(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap_or_default()
}

fn wf(name: &str, spec: &str) -> ResourceWrite {
    ResourceWrite {
        kind: Kind::Workflow,
        metadata: Metadata { name: name.into(), namespace: "default".into(), labels: BTreeMap::new() },
        spec: spec.into(),
    }
}

fn actions(r: Vec<AppliedResource>) -> Vec<Applied> {
    r.into_iter().map(|a| a.applied).collect()
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::new("default", Kind::Workflow, name)
}

/// The names of one page of workflows.
async fn names(s: &Arc<dyn JobStore>, after: Option<&str>, limit: u32) -> Vec<String> {
    s.list_resources(Kind::Workflow, Some("default"), after.map(|a| ("default", a)), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.metadata.name)
        .collect()
}

/// Created, then unchanged, then configured by a label (same generation), then by a spec
/// (next generation); listing and reading agree.
pub(super) async fn resources_apply_and_generation(s: Arc<dyn JobStore>) {
    let a = s.apply_resources(vec![wf("a", r#"{"steps":[1]}"#), wf("b", "{}")], when(0)).await.unwrap();
    assert_eq!(actions(a), [Applied::Created, Applied::Created]);
    let a = s.apply_resources(vec![wf("a", r#"{"steps":[1]}"#), wf("b", "{}")], when(1)).await.unwrap();
    assert_eq!(a[0].previous.as_ref().map(|p| p.spec.as_str()), Some(r#"{"steps":[1]}"#));
    assert_eq!(actions(a), [Applied::Unchanged, Applied::Unchanged]);
    let mut labelled = wf("a", r#"{"steps":[1]}"#);
    labelled.metadata.labels.insert("team".into(), "ops".into());
    assert_eq!(
        actions(s.apply_resources(vec![labelled.clone()], when(2)).await.unwrap()),
        [Applied::Configured]
    );
    let got = s.get_resource(&key("a")).await.unwrap().expect("stored");
    assert_eq!((got.generation, got.metadata.labels.len()), (1, 1), "a label alone keeps the generation");
    let mut changed = labelled;
    changed.spec = r#"{"steps":[2]}"#.into();
    let done = s.apply_resources(vec![changed], when(3)).await.unwrap();
    assert_eq!((done[0].applied, done[0].generation), (Applied::Configured, 2));
    let got = s.get_resource(&key("a")).await.unwrap().expect("stored");
    assert_eq!((got.generation, got.spec.as_str()), (2, r#"{"steps":[2]}"#));
    assert_eq!((got.created_at, got.updated_at), (when(0), when(3)));
    let b = s.get_resource(&key("b")).await.unwrap().expect("stored");
    assert_eq!(b.generation, 1, "b's generation did not move");
    assert_eq!(names(&s, None, 10).await, ["a", "b"]);
    assert!(s.get_resource(&key("nope")).await.unwrap().is_none());
}

/// A batch naming one resource twice is refused whole: nothing of it is stored, and what
/// was there before stays as it was.
pub(super) async fn resources_apply_is_all_or_nothing(s: Arc<dyn JobStore>) {
    s.apply_resources(vec![wf("keep", "{}")], when(0)).await.unwrap();
    let err = s
        .apply_resources(vec![wf("new", "{}"), wf("keep", r#"{"x":1}"#), wf("new", r#"{"y":1}"#)], when(1))
        .await
        .expect_err("a resource twice");
    assert!(matches!(err, StoreError::Invalid(ref m) if m.contains("workflows/new is named twice")), "{err}");
    assert!(s.get_resource(&key("new")).await.unwrap().is_none(), "nothing of the batch stored");
    let keep = s.get_resource(&key("keep")).await.unwrap().expect("kept");
    assert_eq!((keep.spec.as_str(), keep.generation), ("{}", 1));
}

/// Deletes say per key whether the resource existed; a status is kept only for the
/// generation it observed, and an apply keeps it.
pub(super) async fn resources_delete_and_status(s: Arc<dyn JobStore>) {
    s.apply_resources(vec![wf("a", "{}"), wf("b", "{}")], when(0)).await.unwrap();
    let mut status = Status::default();
    status.observe(1, "Valid", ConditionStatus::True, "Accepted", "ok", when(1));
    assert!(s.set_resource_status(&key("a"), 1, &status, when(1)).await.unwrap());
    assert!(
        !s.set_resource_status(&key("a"), 2, &status, when(1)).await.unwrap(),
        "a generation it has not reached"
    );
    assert!(!s.set_resource_status(&key("gone"), 1, &status, when(1)).await.unwrap());
    let a = s.get_resource(&key("a")).await.unwrap().expect("stored");
    assert_eq!(a.status, status);
    s.apply_resources(vec![wf("a", r#"{"v":2}"#)], when(2)).await.unwrap();
    let a = s.get_resource(&key("a")).await.unwrap().expect("stored");
    assert_eq!((a.generation, a.status.observed_generation), (2, 1), "the status waits for its controller");

    assert_eq!(s.delete_resources(vec![key("a"), key("nope")]).await.unwrap(), [true, false]);
    assert!(s.get_resource(&key("a")).await.unwrap().is_none());
    assert_eq!(names(&s, None, 10).await.len(), 1);
}

/// Two applies of one new resource at once (two servers): one creates it, the other finds
/// it; the generation is 1 or 2, never two rows or a lost write.
pub(super) async fn resources_concurrent_applies_agree(s: Arc<dyn JobStore>) {
    let (x, y) = tokio::join!(
        s.apply_resources(vec![wf("race", r#"{"v":1}"#)], when(0)),
        s.apply_resources(vec![wf("race", r#"{"v":2}"#)], when(0)),
    );
    let (x, y) = (x.unwrap().remove(0), y.unwrap().remove(0));
    let mut outcomes = [(x.applied, x.generation), (y.applied, y.generation)];
    outcomes.sort_by_key(|a| a.1);
    assert_eq!(outcomes, [(Applied::Created, 1), (Applied::Configured, 2)], "each saw the other's write");
    let r = s.get_resource(&key("race")).await.unwrap().expect("stored");
    assert_eq!(r.generation, 2);
    assert_eq!(names(&s, None, 10).await.len(), 1);
}

/// Pages: at most `limit` names each, in byte order on every backend (`-` < `.` < digits <
/// upper case < `_` < lower case, whatever the database's locale), each page starting after
/// the cursor, also when the cursor's own resource was deleted in between; past the last
/// name a page is empty.
pub(super) async fn resources_list_in_pages(s: Arc<dyn JobStore>) {
    let mut all = ["b", "a", "a-1", "a.b", "a_b", "B", "Z9", "0x", "zz"].map(String::from).to_vec();
    s.apply_resources(all.iter().map(|n| wf(n, "{}")).collect(), when(0)).await.unwrap();
    all.sort();
    assert_eq!(all, ["0x", "B", "Z9", "a", "a-1", "a.b", "a_b", "b", "zz"], "Rust's order is byte order");
    assert_eq!(names(&s, None, 1000).await, all);
    let first = names(&s, None, 4).await;
    assert_eq!(first, all[..4]);
    let second = names(&s, first.last().map(String::as_str), 4).await;
    assert_eq!(second, all[4..8]);
    // The cursor's own resource goes away: the next page still starts right after it.
    let cursor = second.last().cloned().unwrap();
    assert_eq!(s.delete_resources(vec![key(&cursor)]).await.unwrap(), [true]);
    assert_eq!(names(&s, Some(&cursor), 4).await, ["zz"]);
    assert!(names(&s, Some("zz"), 4).await.is_empty(), "past the last name");
    // A cursor that was never a name works as a bound too.
    assert_eq!(names(&s, Some("a0"), 2).await, ["a_b", "zz"]);
    assert_eq!(names(&s, Some("Z"), 1).await, ["Z9"]);
}
