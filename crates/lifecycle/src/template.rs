//! `multi` path templates: `%n` node name, `%h` host name, `%I` the node's 1-based index
//! on the command line, `%d` a timestamp (the seed's meaning; Celery's `%d` is the domain),
//! `%%` a literal `%`. Pid file templates may not vary with time, and must give every node
//! its own file; both are checked before anything starts.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// What placeholders expand to for one node.
#[derive(Clone, Debug)]
pub struct Vars<'a> {
    /// `%n`.
    pub node: &'a str,
    /// `%h`.
    pub host: &'a str,
    /// `%I` (1-based).
    pub index: usize,
    /// `%d`.
    pub timestamp: &'a str,
}

/// Expands `template`; unknown placeholders and a trailing `%` are errors.
pub fn expand(template: &str, v: &Vars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(v.node),
            Some('h') => out.push_str(v.host),
            Some('I') => out.push_str(&v.index.to_string()),
            Some('d') => out.push_str(v.timestamp),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("unknown placeholder %{other} (use %n %h %I %d or %%)")),
            None => return Err("a lone % at the end (write %% for a literal %)".into()),
        }
    }
    Ok(out)
}

/// True if `template` uses a time-varying placeholder.
fn varies_with_time(template: &str) -> bool {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() == Some('d') {
            return true;
        }
    }
    false
}

/// Expands `--pidfile` for every node (`nodes[i]` has index i+1), refusing time-varying
/// placeholders and two nodes sharing a file.
pub fn pidfiles(template: &str, nodes: &[String], host: &str) -> Result<Vec<PathBuf>> {
    if varies_with_time(template) {
        return Err(Error::usage(format!(
            "--pidfile '{template}': %d changes with time, so stop and status could never find the file again"
        )));
    }
    let paths = expand_all("--pidfile", template, nodes, host, "")?;
    let mut seen: HashMap<&PathBuf, &str> = HashMap::new();
    for (path, node) in paths.iter().zip(nodes) {
        if let Some(other) = seen.insert(path, node) {
            return Err(Error::usage(format!(
                "--pidfile '{template}': nodes {other} and {node} would share {}; put %n in the template",
                path.display()
            )));
        }
    }
    Ok(paths)
}

/// Expands `--logfile` for every node.
pub fn logfiles(template: &str, nodes: &[String], host: &str, timestamp: &str) -> Result<Vec<PathBuf>> {
    expand_all("--logfile", template, nodes, host, timestamp)
}

fn expand_all(
    flag: &str,
    template: &str,
    nodes: &[String],
    host: &str,
    timestamp: &str,
) -> Result<Vec<PathBuf>> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let v = Vars { node, host, index: i + 1, timestamp };
            match expand(template, &v) {
                Ok(s) if s.trim().is_empty() => {
                    Err(Error::usage(format!("{flag} '{template}': expands to nothing")))
                }
                Ok(s) => Ok(PathBuf::from(s)),
                Err(e) => Err(Error::usage(format!("{flag} '{template}': {e}"))),
            }
        })
        .collect()
}

/// The `%d` value for now: `20260102-150405` (UTC).
pub fn timestamp_now() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_expand() {
        let v = Vars { node: "alpha", host: "box.example.com", index: 2, timestamp: "T" };
        assert_eq!(expand("/r/%n-%h-%I-%d-100%%.log", &v).unwrap(), "/r/alpha-box.example.com-2-T-100%.log");
        assert!(expand("%x", &v).is_err());
        assert!(expand("50%", &v).is_err());
    }

    #[test]
    fn pidfiles_must_be_distinct_and_stable() {
        let ns = nodes(&["alpha", "beta"]);
        let p = pidfiles("/run/%n.pid", &ns, "h").unwrap();
        assert_eq!(p, [PathBuf::from("/run/alpha.pid"), PathBuf::from("/run/beta.pid")]);
        let e = pidfiles("/run/w.pid", &ns, "h").unwrap_err().to_string();
        assert!(e.contains("would share") && e.contains("%n"), "{e}");
        assert!(pidfiles("/run/%n-%d.pid", &ns, "h").unwrap_err().to_string().contains("%d"));
        assert!(pidfiles("/run/100%%-%n.pid", &ns, "h").is_ok(), "%% is not %d");
        let l = logfiles("/log/%n%I.log", &ns, "h", "T").unwrap();
        assert_eq!(l, [PathBuf::from("/log/alpha1.log"), PathBuf::from("/log/beta2.log")]);
    }
}
