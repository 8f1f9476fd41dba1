//! Job routing: queue aliases and job-name → queue routes, read from the file named by
//! `ROTA_ROUTING_CONFIG` or from the `routing:` section of `$XDG_CONFIG_HOME/rota/
//! config.yaml`, and applied by `job submit` before a job leaves the CLI. Pure data and
//! matching; it never talks to the server.
//!
//! Precedence: an explicit `--queue` wins, then the first route whose pattern matches the
//! job's name, then the document's own queue; the result is finally resolved through the
//! aliases.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The routing table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Routing {
    /// alias → queue (an alias may name another alias; cycles are refused).
    #[serde(default)]
    pub(crate) aliases: BTreeMap<String, String>,
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Job-name pattern: `*` matches any run of characters, `?` one character.
    #[serde(rename = "match")]
    pub(crate) pattern: String,
    /// Queue (or alias) for matching jobs.
    pub(crate) queue: String,
}

/// Where the active routing came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Loaded {
    /// The file read, if any.
    pub(crate) source: Option<PathBuf>,
    /// The table (empty when there is no routing).
    pub(crate) routing: Routing,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    routing: Option<Routing>,
}

/// A starter routing file for `rota routing dump --sample`.
pub(crate) const SAMPLE: &str = "\
# rota routing: point ROTA_ROUTING_CONFIG at this file, or put it under `routing:` in
# $XDG_CONFIG_HOME/rota/config.yaml. Applied by `rota job submit`.
aliases:
  # Submitting to queue `fast` sends the job to `high-priority`.
  fast: high-priority
routes:
  # First match wins; `*` matches any run of characters, `?` one character.
  - match: \"build-*\"
    queue: builds
  - match: \"nightly-report\"
    queue: reports
";

/// The routing in force for this process: `ROTA_ROUTING_CONFIG`, else the `routing:`
/// section of `$XDG_CONFIG_HOME/rota/config.yaml`.
pub(crate) fn load_active() -> Result<Loaded> {
    let env_path = std::env::var_os("ROTA_ROUTING_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    let config_file = directories::ProjectDirs::from("", "", "rota")
        .map(|d| d.config_dir().join("config.yaml"))
        .unwrap_or_else(|| PathBuf::from("/nonexistent/rota/config.yaml"));
    load(env_path.as_deref(), &config_file)
}

/// Loads the active routing: `env_path` (from `ROTA_ROUTING_CONFIG`) if given, else the
/// config file's `routing:` section if that file exists, else none.
pub(crate) fn load(env_path: Option<&Path>, config_file: &Path) -> Result<Loaded> {
    if let Some(p) = env_path {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the routing file {} (ROTA_ROUTING_CONFIG)", p.display()))?;
        let routing: Routing = parse(&text, p)?;
        routing.validate().with_context(|| format!("{}", p.display()))?;
        return Ok(Loaded { source: Some(p.to_path_buf()), routing });
    }
    if config_file.exists() {
        let text = std::fs::read_to_string(config_file)
            .with_context(|| format!("cannot read {}", config_file.display()))?;
        let cfg: ConfigFile = parse(&text, config_file)?;
        if let Some(routing) = cfg.routing {
            routing.validate().with_context(|| format!("{}: routing", config_file.display()))?;
            return Ok(Loaded { source: Some(config_file.to_path_buf()), routing });
        }
    }
    Ok(Loaded { source: None, routing: Routing::default() })
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        return serde_json::from_str(text).with_context(|| format!("{}: invalid JSON", path.display()));
    }
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl Routing {
    /// Refuses empty names and alias cycles, naming the offender.
    pub(crate) fn validate(&self) -> Result<()> {
        for (i, r) in self.routes.iter().enumerate() {
            if r.pattern.is_empty() {
                bail!("routes[{i}].match: empty pattern");
            }
            if r.queue.is_empty() {
                bail!("routes[{i}].queue: empty queue");
            }
        }
        for (alias, target) in &self.aliases {
            if alias.is_empty() || target.is_empty() {
                bail!("aliases.{alias}: alias and queue must not be empty");
            }
            self.resolve(alias).with_context(|| format!("aliases.{alias}"))?;
        }
        Ok(())
    }

    /// Follows aliases from `queue` to a real queue name.
    pub(crate) fn resolve(&self, queue: &str) -> Result<String> {
        let mut seen = vec![queue.to_string()];
        let mut cur = queue.to_string();
        while let Some(next) = self.aliases.get(&cur) {
            if seen.contains(next) {
                seen.push(next.clone());
                bail!("alias cycle: {}", seen.join(" -> "));
            }
            seen.push(next.clone());
            cur = next.clone();
        }
        Ok(cur)
    }

    /// The queue a job gets: explicit `--queue`, else the first route matching its name,
    /// else its document's queue; resolved through the aliases.
    pub(crate) fn queue_for(
        &self,
        explicit: Option<&str>,
        job_name: Option<&str>,
        document: &str,
    ) -> Result<String> {
        let chosen = explicit
            .map(str::to_string)
            .or_else(|| {
                let name = job_name?;
                self.routes.iter().find(|r| glob(&r.pattern, name)).map(|r| r.queue.clone())
            })
            .unwrap_or_else(|| document.to_string());
        self.resolve(&chosen)
    }
}

/// `*` and `?` wildcard match over characters.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routing {
        serde_saphyr::from_str(SAMPLE).unwrap()
    }

    #[test]
    fn sample_parses_and_routes() {
        let r = table();
        r.validate().unwrap();
        assert_eq!(r.queue_for(None, Some("build-web"), "default").unwrap(), "builds");
        assert_eq!(r.queue_for(None, Some("other"), "default").unwrap(), "default");
        assert_eq!(r.queue_for(Some("fast"), Some("build-web"), "default").unwrap(), "high-priority");
        assert_eq!(r.queue_for(None, None, "fast").unwrap(), "high-priority");
    }

    #[test]
    fn globs() {
        assert!(glob("build-*", "build-"));
        assert!(glob("*-report", "nightly-report"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
    }

    #[test]
    fn alias_cycles_are_refused() {
        let mut r = Routing::default();
        r.aliases.insert("a".into(), "b".into());
        r.aliases.insert("b".into(), "a".into());
        let e = format!("{:#}", r.validate().unwrap_err());
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn loads_from_env_path_or_config() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("routing.yaml");
        std::fs::write(&f, SAMPLE).unwrap();
        let l = load(Some(&f), &dir.path().join("none.yaml")).unwrap();
        assert_eq!(l.source.as_deref(), Some(f.as_path()));
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, "routing:\n  aliases:\n    x: y\n").unwrap();
        let l = load(None, &cfg).unwrap();
        assert_eq!(l.routing.resolve("x").unwrap(), "y");
        let none = load(None, &dir.path().join("missing.yaml")).unwrap();
        assert!(none.source.is_none());
        std::fs::write(&f, "routes:\n  - match: x\n    queeu: y\n").unwrap();
        assert!(load(Some(&f), &cfg).is_err(), "unknown keys are refused");
    }
}
