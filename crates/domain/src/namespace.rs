//! Namespaces: the group a worker, job, queue or resource belongs to. Namespaces organise a
//! fleet (a worker claims only its namespace's jobs; fleet commands act within one); they
//! are not a security boundary: the admin token reaches every namespace.
//!
//! This module owns the name rule and the default; it must not know where a namespace is
//! stored or how it is given on a command line.

use crate::limits::LimitError;

/// The namespace of everything that names none, and of every record written before
/// namespaces existed.
pub const DEFAULT: &str = "default";

/// Longest namespace name: a DNS label, so a namespace can name a directory, a label value
/// and a host-side path segment unchanged.
pub const MAX_NAMESPACE: usize = 63;

/// The pattern of a namespace name, for the OpenAPI document and error messages.
pub const NAMESPACE_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// A namespace name: 1..=63 of `a-z 0-9 -`, starting and ending with a letter or digit.
pub fn check(field: &str, s: &str) -> Result<(), LimitError> {
    let bad = |why: String| Err(LimitError { field: field.to_string(), message: why });
    if s.is_empty() || s.len() > MAX_NAMESPACE {
        return bad(format!(
            "a namespace is 1-{MAX_NAMESPACE} characters of a-z 0-9 - (got {} characters)",
            s.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !s.chars().all(ok_char) || s.starts_with('-') || s.ends_with('-') {
        let shown: String = s.chars().take(MAX_NAMESPACE).collect();
        return bad(format!(
            "'{shown}' is not a namespace: use a-z 0-9 and -, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// `true` for the default namespace, which serde leaves out of documents so that records
/// and manifests written before namespaces existed read back unchanged.
pub fn is_default(s: &str) -> bool {
    s == DEFAULT
}

/// The default namespace as an owned string, for serde's `default = …`.
pub fn default_owned() -> String {
    DEFAULT.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_dns_label_rule() {
        for good in ["default", "a", "team-1", "0", &"a".repeat(63)] {
            assert!(check("namespace", good).is_ok(), "{good}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", "@a", "a/b", &"a".repeat(64)] {
            let err = check("namespace", bad).unwrap_err();
            assert_eq!(err.field, "namespace");
            assert!(err.message.contains("namespace"), "{bad}: {}", err.message);
        }
    }
}
