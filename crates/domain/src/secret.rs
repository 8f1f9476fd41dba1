//! Secrets: named key/value data a step or a worker config refers to (`{secret: NAME/KEY}`),
//! never carries. This module owns the reference type, the "string or reference" value of
//! an environment variable ([`EnvValue`]), and the rules of names, keys and values (a value
//! shorter than [`MIN_VALUE_BYTES`] is refused: masking it would shred logs).
//!
//! It must not hold a value longer than a call, know a key-encryption key, or do I/O: the
//! server seals and resolves, the store keeps ciphertext only, the worker masks.

use crate::limits::{self, LimitError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Shortest value accepted: masking a shorter one would cut ordinary words out of logs.
pub const MIN_VALUE_BYTES: usize = 6;
/// Longest value of one key.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys in one secret.
pub const MAX_KEYS: usize = 64;
/// Longest key name.
pub const MAX_KEY: usize = 253;

/// A reference to one key of one secret, as documents write it: `{secret: deploy/token}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// `NAME/KEY`: the secret's name, a slash, the key.
    #[cfg_attr(feature = "openapi", schema(example = "deploy/token"))]
    pub secret: String,
}

impl SecretRef {
    /// A reference to `key` of secret `name`.
    pub fn new(name: &str, key: &str) -> Self {
        Self { secret: format!("{name}/{key}") }
    }

    /// The secret's name (before the first `/`).
    pub fn name(&self) -> &str {
        self.secret.split_once('/').map_or(self.secret.as_str(), |(n, _)| n)
    }

    /// The key (after the first `/`; empty when there is no `/`).
    pub fn key(&self) -> &str {
        self.secret.split_once('/').map_or("", |(_, k)| k)
    }

    /// Checks the reference's form: a secret name and a key, `NAME/KEY`.
    pub fn validate(&self, field: &str) -> Result<(), LimitError> {
        if !self.secret.contains('/') {
            return Err(LimitError {
                field: field.to_string(),
                message: format!(
                    "`{}` is not NAME/KEY (a secret's name, a slash, its key)",
                    shown(&self.secret)
                ),
            });
        }
        check_name(field, self.name())?;
        check_key(field, self.key())
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.secret)
    }
}

/// An environment variable's value in a document: a string, or a reference to a secret's
/// key resolved on the server when the step is handed to its worker. Untagged, so every
/// document written before secrets existed reads unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum EnvValue {
    /// The value itself.
    Plain(String),
    /// A secret's key, given to the step only.
    Secret(SecretRef),
}

impl EnvValue {
    /// The plain value; `None` for a reference.
    pub fn plain(&self) -> Option<&str> {
        match self {
            EnvValue::Plain(s) => Some(s),
            EnvValue::Secret(_) => None,
        }
    }

    /// The reference; `None` for a plain value.
    pub fn secret(&self) -> Option<&SecretRef> {
        match self {
            EnvValue::Plain(_) => None,
            EnvValue::Secret(r) => Some(r),
        }
    }
}

impl From<String> for EnvValue {
    fn from(s: String) -> Self {
        EnvValue::Plain(s)
    }
}

impl From<&str> for EnvValue {
    fn from(s: &str) -> Self {
        EnvValue::Plain(s.to_string())
    }
}

impl PartialEq<str> for EnvValue {
    fn eq(&self, other: &str) -> bool {
        self.plain() == Some(other)
    }
}

impl PartialEq<&str> for EnvValue {
    fn eq(&self, other: &&str) -> bool {
        self.plain() == Some(*other)
    }
}

/// An environment split in two: plain values, and the variables a secret fills in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitEnv {
    /// Variables with their values.
    pub plain: BTreeMap<String, String>,
    /// Variables whose value is a secret's key.
    pub secrets: BTreeMap<String, SecretRef>,
}

/// Splits `env` (later layers already laid over earlier ones) into plain values and
/// references.
pub fn split_env<'a>(env: impl IntoIterator<Item = (&'a String, &'a EnvValue)>) -> SplitEnv {
    let mut out = SplitEnv::default();
    for (k, v) in env {
        match v {
            EnvValue::Plain(s) => {
                out.secrets.remove(k);
                out.plain.insert(k.clone(), s.clone());
            }
            EnvValue::Secret(r) => {
                out.plain.remove(k);
                out.secrets.insert(k.clone(), r.clone());
            }
        }
    }
    out
}

/// A secret's name: the resource name rule.
pub fn check_name(field: &str, name: &str) -> Result<(), LimitError> {
    limits::check_name(field, name)
}

/// A key name: 1..=253 of letters, digits, `.`, `_` and `-` (a file name and a Kubernetes
/// secret key alike).
pub fn check_key(field: &str, key: &str) -> Result<(), LimitError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && key != "."
        && key != "..";
    if ok {
        Ok(())
    } else {
        Err(LimitError {
            field: field.to_string(),
            message: format!("`{}` is not a key: 1-{MAX_KEY} of letters, digits, . _ and -", shown(key)),
        })
    }
}

/// A value's size: at least [`MIN_VALUE_BYTES`] (shorter ones would shred logs when
/// masked), at most [`MAX_VALUE_BYTES`]. The message never shows the value.
pub fn check_value(field: &str, value: &[u8]) -> Result<(), LimitError> {
    let bad = |message: String| Err(LimitError { field: field.to_string(), message });
    if value.len() < MIN_VALUE_BYTES {
        return bad(format!(
            "a secret value is at least {MIN_VALUE_BYTES} bytes (this one is {}): masking a shorter \
             value in step output would cut ordinary text out of logs",
            value.len()
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return bad(format!("is {} bytes; the limit is {MAX_VALUE_BYTES}", value.len()));
    }
    Ok(())
}

/// Checks a whole secret's keys and values, naming the key (`data.token`).
pub fn check_data<'a>(
    under: &str,
    data: impl IntoIterator<Item = (&'a String, &'a [u8])>,
) -> Result<usize, LimitError> {
    let mut n = 0;
    for (k, v) in data {
        let field = format!("{under}.{k}");
        check_key(&field, k)?;
        check_value(&field, v)?;
        n += 1;
    }
    limits::check_count(under, n, MAX_KEYS)?;
    Ok(n)
}

/// A user's text shown in an error, bounded.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_strings_or_references() {
        let env: BTreeMap<String, EnvValue> =
            serde_json::from_str(r#"{"A":"plain","B":{"secret":"deploy/token"}}"#).unwrap();
        assert_eq!(env["A"], EnvValue::Plain("plain".into()));
        let r = env["B"].secret().unwrap();
        assert_eq!((r.name(), r.key()), ("deploy", "token"));
        assert_eq!(serde_json::to_string(&env).unwrap(), r#"{"A":"plain","B":{"secret":"deploy/token"}}"#);
        assert!(serde_json::from_str::<EnvValue>(r#"{"secret":"a/b","x":1}"#).is_err());
    }

    #[test]
    fn references_and_values_are_checked_without_showing_values() {
        assert!(SecretRef::new("deploy", "token").validate("env.T").is_ok());
        assert_eq!(SecretRef { secret: "nokey".into() }.validate("env.T").unwrap_err().field, "env.T");
        assert!(SecretRef { secret: "a/".into() }.validate("x").is_err());
        assert!(SecretRef { secret: "a b/k".into() }.validate("x").is_err());
        let e = check_value("data.k", b"s3cr").unwrap_err();
        assert!(e.message.contains("at least 6") && !e.message.contains("s3cr"), "{e:?}");
        assert!(check_value("data.k", b"s3cret").is_ok());
        assert!(check_key("k", "tls.crt").is_ok() && check_key("k", "a/b").is_err());
    }

    #[test]
    fn a_later_layer_wins_whatever_its_kind() {
        let job: BTreeMap<String, EnvValue> =
            [("A".to_string(), EnvValue::Secret(SecretRef::new("s", "k"))), ("B".into(), "x".into())].into();
        let step: BTreeMap<String, EnvValue> =
            [("A".to_string(), "plain".into()), ("B".into(), EnvValue::Secret(SecretRef::new("s", "b")))]
                .into();
        let split = split_env(job.iter().chain(step.iter()));
        assert_eq!(split.plain, BTreeMap::from([("A".to_string(), "plain".to_string())]));
        assert_eq!(split.secrets, BTreeMap::from([("B".to_string(), SecretRef::new("s", "b"))]));
    }
}
