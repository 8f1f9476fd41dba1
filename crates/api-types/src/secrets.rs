//! Secrets (`/api/v1/secrets...`, `kind: Secret` documents): what a write sends (values,
//! write-only), what every read shows (key names and value sizes, never a value), and a
//! key rotation's request and answer. `Debug` of anything carrying values shows sizes only.

use crate::bytes::Bytes64;
use chrono::{DateTime, Utc};
use rota_domain::limits::LimitError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A `Secret` document's spec. `data` (base64) and `stringData` (text) carry values and are
/// write-only; `keys` is what reads show (names and sizes) and what an apply ignores, so a
/// document from `rota get secret NAME -o yaml` applies back unchanged: a Secret without
/// values keeps the stored ones.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSpec {
    /// Values by key, base64 (any bytes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, Bytes64>,
    /// Values by key, as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// Key names and value sizes in bytes, as stored (shown by reads, ignored by writes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, u64>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = |m: Vec<(&String, usize)>| {
            m.into_iter().map(|(k, n)| format!("{k}: {n} bytes")).collect::<Vec<_>>()
        };
        f.debug_struct("SecretSpec")
            .field("data", &sizes(self.data.iter().map(|(k, v)| (k, v.0.len())).collect()))
            .field("string_data", &sizes(self.string_data.iter().map(|(k, v)| (k, v.len())).collect()))
            .field("keys", &self.keys)
            .finish()
    }
}

impl SecretSpec {
    /// Whether it carries values (else an apply keeps the stored ones).
    pub fn has_values(&self) -> bool {
        !self.data.is_empty() || !self.string_data.is_empty()
    }

    /// Its values by key (`data` and `stringData` together), checked: key names, at least
    /// `rota_domain::secret::MIN_VALUE_BYTES` per value, a key given once. The error's field
    /// is relative to the spec (`stringData.token`) and never shows a value.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, LimitError> {
        use rota_domain::secret::check_data;
        check_data("data", self.data.iter().map(|(k, v)| (k, v.0.as_slice())))?;
        check_data("stringData", self.string_data.iter().map(|(k, v)| (k, v.as_bytes())))?;
        let mut out: BTreeMap<String, Vec<u8>> =
            self.data.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (k, v) in &self.string_data {
            if out.insert(k.clone(), v.as_bytes().to_vec()).is_some() {
                return Err(LimitError {
                    field: format!("stringData.{k}"),
                    message: format!("key '{k}' is also in data; give each key once"),
                });
            }
        }
        rota_domain::limits::check_count("data", out.len(), rota_domain::secret::MAX_KEYS)?;
        Ok(out)
    }
}

/// `PUT /api/v1/secrets/{name}`: creates or replaces a secret's values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutSecretRequest {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Values by key, base64: every key the secret is to have (keys left out are removed).
    pub data: BTreeMap<String, Bytes64>,
}

impl fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("labels", &self.labels)
            .field("keys", &self.data.keys())
            .finish()
    }
}

/// A secret as every read shows it: never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Rises by one each time its values change.
    pub generation: u64,
    /// Key names and value sizes in bytes.
    pub keys: BTreeMap<String, u64>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutSecretResponse {
    /// Created, configured or unchanged.
    pub action: rota_domain::resource::Applied,
    /// The secret afterwards.
    pub secret: SecretView,
}

/// `GET /api/v1/secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretList {
    /// By name.
    pub items: Vec<SecretView>,
}

/// `POST /api/v1/secrets/rotate-key`: the new key-encryption key (the text of its key file).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateKeyRequest {
    /// The new key file's text (32 bytes, base64).
    pub key: String,
}

impl fmt::Debug for RotateKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotateKeyRequest { key: <hidden> }")
    }
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateKeyResponse {
    /// The fingerprint of the key before.
    pub previous_fingerprint: String,
    /// The fingerprint of the key now held.
    pub fingerprint: String,
    /// How many secrets were re-encrypted.
    pub secrets: u64,
    /// The key file this server rewrote with the new key (its previous content kept
    /// beside it as `<file>.previous`), if it reads its key from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// `DELETE /api/v1/secrets/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteSecretResponse {
    /// Its name.
    pub name: String,
    /// Whether it existed.
    pub deleted: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_never_shown() {
        let spec: SecretSpec =
            serde_json::from_str(r#"{"stringData":{"token":"s3cret-value"},"data":{"b":"AAECAwQFBg=="}}"#)
                .unwrap();
        let v = spec.values().unwrap();
        assert_eq!(v["token"], b"s3cret-value");
        assert_eq!(v["b"].len(), 7);
        assert!(!format!("{spec:?}").contains("s3cret"));
        let short: SecretSpec = serde_json::from_str(r#"{"stringData":{"pin":"1234"}}"#).unwrap();
        let e = short.values().unwrap_err();
        assert_eq!(e.field, "stringData.pin");
        assert!(!e.message.contains("1234"));
        let read_back: SecretSpec = serde_json::from_str(r#"{"keys":{"token":12}}"#).unwrap();
        assert!(!read_back.has_values());
    }
}
