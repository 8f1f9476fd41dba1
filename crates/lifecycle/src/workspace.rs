//! Where a worker runs its steps when no `--workspace` is given: `<data>/workspace/<name>`,
//! one directory per worker name, so several workers on one host need nothing but
//! `--name`. The name becomes a safe, readable directory name (unsafe bytes
//! percent-encoded, names that would clash with the workspace root's own files refused).
//! Also the one-time retirement of the shared workspace earlier releases used by default.
//! It must not decide anything about a workspace given with `--workspace`.

use crate::error::{Error, Result};
use crate::paths::{DEFAULT_PROFILE, Instance};
use rota_worker::Retirement;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Names that cannot be directories of the workspace root: the root itself, its parent,
/// and what an earlier release kept there (its attempt directories and `.rota/`, which
/// holds that release's journal of running steps until it is retired).
const RESERVED: &[&str] = &["", ".", "..", "attempts", ".rota"];

/// Longest directory name most file systems take (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The directory name of worker `name`: the name itself, with `/`, `%` and control
/// characters percent-encoded (`%` too, so two names never share a directory). Reserved
/// and over-long names are usage errors naming what to do instead.
pub fn dir_name(name: &str) -> Result<String> {
    if RESERVED.contains(&name) {
        let what = if name.is_empty() { "an empty name".to_string() } else { format!("'{name}'") };
        return Err(Error::usage(format!(
            "--name: {what} cannot name a default workspace (reserved: '.', '..', 'attempts', '.rota'); \
             choose another name or give --workspace DIR"
        )));
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '/' || c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if out.len() > NAME_MAX {
        return Err(Error::usage(format!(
            "--name: '{}' is too long for a default workspace directory ({} bytes as a directory \
             name, at most {NAME_MAX}); choose a shorter name or give --workspace DIR",
            name.escape_debug(),
            out.len()
        )));
    }
    Ok(out)
}

/// The default workspace of worker `name`: `<data>/workspace/<dir_name(name)>`, or
/// `<data>/workspace/@<namespace>/<dir_name(name)>` outside the default namespace.
pub fn default_dir(data_dir: &Path, namespace: &str, name: &str) -> Result<PathBuf> {
    let root = data_dir.join("workspace");
    // Outside `default` a worker's directory sits under `@<namespace>`: `w1` of `a` and `w1`
    // of `b` are two workers and must not share a journal. Names never start with `@`, so
    // no worker of `default` can be called like a namespace directory.
    let root =
        if rota_domain::namespace::is_default(namespace) { root } else { root.join(format!("@{namespace}")) };
    Ok(root.join(dir_name(name)?))
}

/// The workspace earlier releases gave `instance` by default: the shared `<data>/workspace`
/// for the default profile (and `rota dev`), `<data>/workspace-<key>` otherwise.
pub fn legacy_dir(data_dir: &Path, instance: &Instance) -> PathBuf {
    match instance {
        Instance::Profile(p) if p == DEFAULT_PROFILE => data_dir.join("workspace"),
        other => data_dir.join(format!("workspace-{}", other.key())),
    }
}

/// Reaps and retires the journal of running steps an earlier release left in `legacy`
/// (once: later starts find nothing). A failure is logged, not fatal: the journal then
/// stays, and the next start tries again.
pub async fn retire_legacy(legacy: PathBuf) {
    let shown = legacy.display().to_string();
    let res = tokio::task::spawn_blocking(move || rota_worker::retire_shared_workspace(&legacy)).await;
    match res {
        Ok(Ok(Retirement::Nothing)) => {}
        Ok(Ok(Retirement::Retired { killed, stale })) => tracing::warn!(
            workspace = %shown, killed, stale,
            "retired the shared workspace of an earlier release: its leftover steps were reaped, \
             its journal removed (workspaces are per worker name now)"
        ),
        Ok(Ok(Retirement::InUse)) => tracing::warn!(
            workspace = %shown,
            "the shared workspace of an earlier release is still in use by a running worker; its \
             journal is retired by a start after that worker stopped"
        ),
        Ok(Err(e)) => tracing::warn!(
            workspace = %shown,
            "cannot retire the shared workspace of an earlier release: {}",
            crate::error::with_causes(&e)
        ),
        Err(e) => tracing::warn!(workspace = %shown, "retiring the old shared workspace failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_distinct_directory_names() {
        assert_eq!(dir_name("w1").unwrap(), "w1");
        assert_eq!(dir_name("gpu@web-1.example").unwrap(), "gpu@web-1.example");
        assert_eq!(dir_name("a b ü").unwrap(), "a b ü", "readable: only unsafe bytes are encoded");
        assert_eq!(dir_name("a/b").unwrap(), "a%2Fb");
        assert_eq!(dir_name("../x").unwrap(), "..%2Fx");
        assert_eq!(dir_name("a%2Fb").unwrap(), "a%252Fb", "never the same as a/b");
        assert_eq!(dir_name("tab\there\n").unwrap(), "tab%09here%0A");
        assert_eq!(dir_name("\u{7f}\u{85}").unwrap(), "%7F%C2%85");
        assert_eq!(dir_name("...").unwrap(), "...");
        for name in ["w1", "a/b", "a%2Fb", "..%2Fx", "x\0y"] {
            let d = dir_name(name).unwrap();
            assert!(!d.contains('/') && !d.chars().any(char::is_control) && d != "." && d != "..", "{d}");
        }
    }

    #[test]
    fn reserved_and_overlong_names_are_usage_errors() {
        for name in ["", ".", "..", "attempts", ".rota"] {
            let e = dir_name(name).unwrap_err();
            assert!(e.is_usage(), "{e}");
            assert!(e.to_string().contains("--workspace DIR"), "{e}");
        }
        assert!(dir_name(&"x".repeat(255)).is_ok());
        assert!(dir_name(&"x".repeat(256)).is_err());
        assert!(dir_name(&"/".repeat(100)).is_err(), "300 bytes once encoded");
    }

    #[test]
    fn each_instance_knows_its_old_workspace() {
        let paths = PathBuf::from("/d");
        assert_eq!(legacy_dir(&paths, &Instance::profile(None).unwrap()), PathBuf::from("/d/workspace"));
        assert_eq!(
            legacy_dir(&paths, &Instance::profile(Some("gpu")).unwrap()),
            PathBuf::from("/d/workspace-profile-gpu")
        );
        assert_eq!(legacy_dir(&paths, &Instance::node("n1").unwrap()), PathBuf::from("/d/workspace-node-n1"));
        assert_eq!(default_dir(&paths, "default", "w/1").unwrap(), PathBuf::from("/d/workspace/w%2F1"));
        assert_eq!(default_dir(&paths, "team-a", "w1").unwrap(), PathBuf::from("/d/workspace/@team-a/w1"));
    }
}
