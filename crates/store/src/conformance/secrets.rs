//! Conformance scenarios for secrets: the key fingerprint stored once (insert-if-absent),
//! writes and generations, namespaces kept apart, writes under another key refused, a
//! re-seal that is all or nothing, and claims that carry references, never values. Sealed
//! bytes are opaque here: the store must keep them exactly.

use super::fixtures::{at, claim_one, step, submit, worker};
use crate::secrets::{SecretRecord, SecretWrite};
use crate::{ConflictKind, JobStore, StoreError};
use chrono::{DateTime, Utc};
use rota_domain::JobSpec;
use rota_domain::resource::Applied;
use rota_domain::secret::{EnvValue, SecretRef};
use std::collections::BTreeMap;
use std::sync::Arc;

fn when(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap_or_default()
}

fn write(ns: &str, name: &str, sealed: &[u8], fp: &str) -> SecretWrite {
    SecretWrite {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::new(),
        keys: BTreeMap::from([("token".to_string(), 12)]),
        sealed: sealed.to_vec(),
        key_fingerprint: fp.into(),
    }
}

/// The first fingerprint is kept; writes are created, configured or unchanged; namespaces
/// are apart; a delete says whether the secret existed.
pub(super) async fn secrets_store_and_generations(s: Arc<dyn JobStore>) {
    assert_eq!(s.secret_key_fingerprint().await.unwrap(), None, "a fresh store holds no key");
    let refused = s.put_secret(write("default", "a", b"x", "fp1"), when(0)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(ConflictKind::SecretKey, _)), "{refused:?}");
    assert_eq!(s.init_secret_key("fp1", when(0)).await.unwrap(), "fp1");
    assert_eq!(s.init_secret_key("fp2", when(1)).await.unwrap(), "fp1", "the first key is kept");
    assert!(matches!(s.init_secret_key("", when(1)).await, Err(StoreError::Invalid(_))));

    // Bytes of every value, NUL and high bytes included, are kept exactly.
    let sealed: Vec<u8> = (0..=255u8).collect();
    assert_eq!(s.put_secret(write("default", "a", &sealed, "fp1"), when(2)).await.unwrap(), Applied::Created);
    assert_eq!(
        s.put_secret(write("default", "a", &sealed, "fp1"), when(3)).await.unwrap(),
        Applied::Unchanged
    );
    let mut labelled = write("default", "a", &sealed, "fp1");
    labelled.labels.insert("team".into(), "ops".into());
    assert_eq!(s.put_secret(labelled.clone(), when(4)).await.unwrap(), Applied::Configured);
    let got = s.get_secret("default", "a").await.unwrap().unwrap();
    assert_eq!(
        (got.generation, got.sealed.as_slice(), &got.labels),
        (1, sealed.as_slice(), &labelled.labels)
    );
    assert_eq!(got.keys, BTreeMap::from([("token".to_string(), 12)]));
    assert_eq!(
        s.put_secret(write("default", "a", b"new", "fp1"), when(5)).await.unwrap(),
        Applied::Configured
    );
    assert_eq!(s.get_secret("default", "a").await.unwrap().unwrap().generation, 2);

    let stale = s.put_secret(write("default", "b", b"x", "fp2"), when(6)).await.unwrap_err();
    assert!(matches!(stale, StoreError::Conflict(ConflictKind::SecretKey, _)), "{stale:?}");
    assert!(s.get_secret("default", "b").await.unwrap().is_none(), "a refused write stores nothing");

    s.put_secret(write("team-b", "a", b"other", "fp1"), when(7)).await.unwrap();
    s.put_secret(write("default", "0-first", b"y", "fp1"), when(7)).await.unwrap();
    let names = |v: Vec<SecretRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(s.list_secrets("default").await.unwrap()), ["0-first", "a"]);
    assert_eq!(s.get_secret("team-b", "a").await.unwrap().unwrap().sealed, b"other");
    assert_eq!(s.all_secrets().await.unwrap().len(), 3);
    assert!(s.delete_secret("default", "a").await.unwrap());
    assert!(!s.delete_secret("default", "a").await.unwrap());
    assert_eq!(
        s.get_secret("team-b", "a").await.unwrap().unwrap().generation,
        1,
        "other namespaces untouched"
    );
}

/// A re-seal replaces every secret's bytes and the key at once; one naming other secrets
/// than the store holds, or from another key, changes nothing.
pub(super) async fn secrets_reseal_is_all_or_nothing(s: Arc<dyn JobStore>) {
    s.init_secret_key("old", when(0)).await.unwrap();
    for n in ["a", "b"] {
        s.put_secret(write("default", n, n.as_bytes(), "old"), when(1)).await.unwrap();
    }
    let all = s.all_secrets().await.unwrap();
    let mut partial = all.clone();
    partial.pop();
    let e = s.reseal_secrets("old", "new", partial, when(2)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ConflictKind::SecretKey, _)), "{e:?}");
    let e = s.reseal_secrets("wrong", "new", all.clone(), when(2)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ConflictKind::SecretKey, _)), "{e:?}");
    assert_eq!(s.secret_key_fingerprint().await.unwrap().as_deref(), Some("old"));
    assert_eq!(s.all_secrets().await.unwrap(), all, "nothing changed");

    let resealed: Vec<SecretRecord> = all
        .iter()
        .map(|r| SecretRecord { sealed: [b"re-", r.sealed.as_slice()].concat(), ..r.clone() })
        .collect();
    s.reseal_secrets("old", "new", resealed, when(3)).await.unwrap();
    assert_eq!(s.secret_key_fingerprint().await.unwrap().as_deref(), Some("new"));
    for r in s.all_secrets().await.unwrap() {
        assert!(r.sealed.starts_with(b"re-") && r.key_fingerprint == "new" && r.generation == 1, "{r:?}");
    }
    let e = s.put_secret(write("default", "c", b"c", "old"), when(4)).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(ConflictKind::SecretKey, _)),
        "a write under the old key: {e:?}"
    );
}

/// A claim hands out references as references, apart from the plain env (a step's plain
/// value wins over a job-level reference of the same name).
pub(super) async fn claims_carry_secret_references(s: Arc<dyn JobStore>) {
    let w = worker(&s).await;
    let mut j = JobSpec::new(vec![step("a")]);
    j.env = BTreeMap::from([
        ("TOKEN".to_string(), EnvValue::Secret(SecretRef::new("deploy", "token"))),
        ("SHADOWED".to_string(), EnvValue::Secret(SecretRef::new("deploy", "other"))),
    ]);
    j.steps[0].env = BTreeMap::from([("SHADOWED".to_string(), "plain".into())]);
    submit(&s, j, at(0)).await;
    let a = claim_one(&s, w, at(1)).await;
    assert_eq!(a.secret_env, BTreeMap::from([("TOKEN".to_string(), SecretRef::new("deploy", "token"))]));
    assert_eq!(a.env.get("SHADOWED").map(String::as_str), Some("plain"));
    assert!(!a.env.contains_key("TOKEN"));
}
