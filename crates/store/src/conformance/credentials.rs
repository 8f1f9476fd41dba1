//! Conformance scenarios for the control-plane credentials (admin and join token hashes):
//! what a fresh store holds, insert-if-absent at start (servers starting together agree on
//! one hash per kind), explicit rotation, and refusal of an empty hash. Through the trait
//! only; it needs none of the job fixtures, so it names only crate-level types.

use crate::{CredentialHashes, CredentialKind, GraceRotation, JobStore, PreviousCredential, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A fixed instant `secs` after an origin, so nothing depends on the clock.
fn when(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap_or_default()
}

/// A well-formed hash (64 hex digits) that differs per `n`.
fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn both(admin: &str, join: &str) -> CredentialHashes {
    CredentialHashes { admin: Some(admin.into()), join: Some(join.into()), previous: vec![] }
}

/// A fresh store holds no credential; the first hashes proposed are stored, later proposals
/// change nothing, and each kind is stored on its own.
pub(super) async fn credentials_are_stored_once(s: Arc<dyn JobStore>) {
    assert_eq!(s.credential_hashes().await.unwrap(), CredentialHashes::default(), "a fresh store");

    let only_admin = CredentialHashes { admin: Some(hash(1)), join: None, previous: vec![] };
    let held = s.init_credentials(&only_admin, when(0)).await.unwrap();
    assert_eq!(held, only_admin, "the admin hash is stored, the join kind stays empty");

    let held = s.init_credentials(&both(&hash(2), &hash(3)), when(1)).await.unwrap();
    assert_eq!(held, both(&hash(1), &hash(3)), "the admin hash is kept, the missing join hash stored");

    let held = s.init_credentials(&both(&hash(4), &hash(5)), when(2)).await.unwrap();
    assert_eq!(held, both(&hash(1), &hash(3)), "a store that holds both keeps both");
    assert_eq!(s.init_credentials(&CredentialHashes::default(), when(3)).await.unwrap(), held);
    assert_eq!(s.credential_hashes().await.unwrap(), held);
}

/// Servers starting together over one store, each proposing its own hashes: every one of
/// them gets back the same hashes, which are the store's and one of the proposals.
pub(super) async fn credentials_init_races_agree_on_one(s: Arc<dyn JobStore>) {
    let mut calls = Vec::new();
    for n in 0..8u8 {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            s.init_credentials(&both(&hash(10 + n), &hash(30 + n)), when(i64::from(n))).await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let stored = s.credential_hashes().await.unwrap();
    assert!(answers.iter().all(|a| *a == stored), "every starter sees the stored hashes: {answers:?}");
    let admin = stored.admin.clone().unwrap();
    let join = stored.join.clone().unwrap();
    assert!((10..18).map(hash).any(|h| h == admin), "the admin hash is one of the proposals: {admin}");
    assert!((30..38).map(hash).any(|h| h == join), "the join hash is one of the proposals: {join}");
}

/// An explicit rotation replaces one kind's hash and leaves the other; a later start's
/// proposal does not undo it; rotating a kind the store holds none of stores it.
pub(super) async fn credentials_rotate(s: Arc<dyn JobStore>) {
    s.rotate_credential(CredentialKind::Join, &hash(7), when(0)).await.unwrap();
    assert_eq!(
        s.credential_hashes().await.unwrap(),
        CredentialHashes { admin: None, join: Some(hash(7)), previous: vec![] }
    );

    let held = s.init_credentials(&both(&hash(1), &hash(2)), when(1)).await.unwrap();
    assert_eq!(held, both(&hash(1), &hash(7)));

    s.rotate_credential(CredentialKind::Admin, &hash(3), when(2)).await.unwrap();
    assert_eq!(s.credential_hashes().await.unwrap(), both(&hash(3), &hash(7)), "only the admin hash changed");
    let held = s.init_credentials(&both(&hash(1), &hash(2)), when(3)).await.unwrap();
    assert_eq!(held, both(&hash(3), &hash(7)), "a start after the rotation keeps the rotated hash");

    s.rotate_credential(CredentialKind::Join, &hash(8), when(4)).await.unwrap();
    s.rotate_credential(CredentialKind::Join, &hash(8), when(5)).await.unwrap();
    assert_eq!(s.credential_hashes().await.unwrap(), both(&hash(3), &hash(8)), "a repeat is harmless");
}

/// An empty hash would match nothing, so a store holding one would lock everyone out (or,
/// compared carelessly, let an empty token in): it is refused and nothing is written.
pub(super) async fn credentials_refuse_an_empty_hash(s: Arc<dyn JobStore>) {
    let proposed = CredentialHashes { admin: Some(hash(1)), join: Some(String::new()), previous: vec![] };
    let err = s.init_credentials(&proposed, when(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(s.credential_hashes().await.unwrap(), CredentialHashes::default(), "nothing was written");

    let err = s.rotate_credential(CredentialKind::Admin, "", when(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(s.credential_hashes().await.unwrap(), CredentialHashes::default());
}

/// A rotation with a grace keeps the replaced hash (and the sealed new token) until its end;
/// a plain rotation drops it; each kind keeps its own.
pub(super) async fn credentials_rotate_with_grace(s: Arc<dyn JobStore>) {
    s.init_credentials(&both(&hash(1), &hash(2)), when(0)).await.unwrap();
    let rotation = GraceRotation { hash: hash(3), until: when(30), handover: Some("sealed".into()) };
    s.rotate_credential_with_grace(CredentialKind::Join, &rotation, when(1)).await.unwrap();
    let held = s.credential_hashes().await.unwrap();
    assert_eq!(
        (held.admin.as_deref(), held.join.as_deref()),
        (Some(hash(1).as_str()), Some(hash(3).as_str()))
    );
    assert_eq!(
        held.previous,
        [PreviousCredential {
            kind: CredentialKind::Join,
            hash: hash(2),
            until: when(30),
            handover: Some("sealed".into())
        }]
    );

    // Another grace rotation keeps the hash it replaces (the one of the first rotation).
    let rotation = GraceRotation { hash: hash(4), until: when(60), handover: None };
    s.rotate_credential_with_grace(CredentialKind::Join, &rotation, when(2)).await.unwrap();
    let held = s.credential_hashes().await.unwrap();
    assert_eq!(held.previous.len(), 1);
    assert_eq!((held.previous[0].hash.as_str(), held.previous[0].until), (hash(3).as_str(), when(60)));

    s.rotate_credential(CredentialKind::Join, &hash(5), when(3)).await.unwrap();
    assert_eq!(
        s.credential_hashes().await.unwrap(),
        both(&hash(1), &hash(5)),
        "a plain rotation ends the grace"
    );

    let fresh = GraceRotation { hash: hash(6), until: when(90), handover: None };
    let err = s
        .rotate_credential_with_grace(
            CredentialKind::Admin,
            &GraceRotation { hash: String::new(), ..fresh.clone() },
            when(4),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    s.rotate_credential_with_grace(CredentialKind::Admin, &fresh, when(4)).await.unwrap();
    let held = s.credential_hashes().await.unwrap();
    assert_eq!((held.admin, held.join), (Some(hash(6)), Some(hash(5))));
    assert_eq!(
        held.previous,
        [PreviousCredential { kind: CredentialKind::Admin, hash: hash(1), until: when(90), handover: None }]
    );
}

/// Run on a store the previous release wrote (the upgrade tests): its token hashes load
/// with no grace kept, a grace rotation keeps the old hash, and its worker `w1` (offline)
/// can be forgotten with a block and unblocked.
pub async fn previous_release_rotates_and_forgets(s: Arc<dyn JobStore>) {
    let held = s.credential_hashes().await.unwrap();
    assert!(held.previous.is_empty(), "{held:?}");
    let old_join = held.join.clone();
    if old_join.is_some() {
        let rotation = GraceRotation { hash: hash(9), until: when(30), handover: None };
        s.rotate_credential_with_grace(CredentialKind::Join, &rotation, when(0)).await.unwrap();
        let held = s.credential_hashes().await.unwrap();
        assert_eq!(held.previous.first().map(|p| Some(p.hash.clone())), Some(old_join));
    }
    let out = s.forget_worker("default", "w1", true, when(1)).await.unwrap();
    assert!(out.known && out.sessions.is_empty() && out.blocked, "{out:?}");
    assert!(s.unblock_worker("default", "w1").await.unwrap());
}
