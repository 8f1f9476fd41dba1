//! Secrets as the store keeps them: one row per namespace and name with its labels,
//! `generation`, key names and sizes (plain: `rota get` shows them) and the sealed values
//! (XChaCha20-Poly1305 ciphertext the server made), plus the fingerprint of the
//! key-encryption key they are sealed with, stored once for the control plane.
//!
//! The store never sees a plaintext value or the key: sealing, opening and the
//! fingerprint's derivation are the server's. What a write changes (created, configured,
//! unchanged; when the generation rises) is decided here by [`decide`], the one rule both
//! backends apply.

use chrono::{DateTime, Utc};
use rota_domain::resource::Applied;
use std::collections::BTreeMap;

/// One secret to create or replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretWrite {
    /// Its namespace: jobs and configs of that namespace reference it.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Key names and the size in bytes of each value.
    pub keys: BTreeMap<String, u64>,
    /// The values, sealed by the server.
    pub sealed: Vec<u8>,
    /// The fingerprint of the key they are sealed with.
    pub key_fingerprint: String,
}

/// A stored secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Rises by one each time its values change (1 when created).
    pub generation: u64,
    /// Key names and value sizes.
    pub keys: BTreeMap<String, u64>,
    /// The sealed values.
    pub sealed: Vec<u8>,
    /// The fingerprint of the key they are sealed with.
    pub key_fingerprint: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What writing `w` over `old` does, and the generation afterwards.
pub fn decide(old: Option<&SecretRecord>, w: &SecretWrite) -> (Applied, u64) {
    match old {
        None => (Applied::Created, 1),
        Some(o) if o.sealed != w.sealed || o.keys != w.keys => (Applied::Configured, o.generation + 1),
        Some(o) if o.labels != w.labels => (Applied::Configured, o.generation),
        Some(o) => (Applied::Unchanged, o.generation),
    }
}

/// The refusal of a write sealed under another key than the store holds.
pub fn stale_key(held: Option<&str>) -> crate::StoreError {
    let why = match held {
        Some(_) => "the secrets were re-encrypted under a new key meanwhile; load the new key file and retry",
        None => "the store holds no secret key yet",
    };
    crate::StoreError::Conflict(crate::ConflictKind::SecretKey, format!("secret not stored: {why}"))
}

/// Whether `resealed` names exactly the secrets `stored` holds, at the same generations.
pub fn same_secrets(stored: &[SecretRecord], resealed: &[SecretRecord]) -> crate::Result<()> {
    let ids = |v: &[SecretRecord]| {
        let mut ids: Vec<(String, String, u64)> =
            v.iter().map(|s| (s.namespace.clone(), s.name.clone(), s.generation)).collect();
        ids.sort();
        ids
    };
    if ids(stored) != ids(resealed) {
        return Err(crate::StoreError::Conflict(
            crate::ConflictKind::SecretKey,
            "secrets changed while the key was being rotated; nothing was re-encrypted: run the rotation again"
                .into(),
        ));
    }
    Ok(())
}
