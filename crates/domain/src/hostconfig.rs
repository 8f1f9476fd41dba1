//! The `WorkerConfig` resource: what a matching worker sets up on its host before it takes
//! work — environment variables for its steps, files in a directory it manages, a `setup`
//! script (run again whenever the config's generation changes) and project directories.
//! Pure rules: validation and how several matching configs combine; the worker applies.

use crate::limits;
use crate::pool::{Member, Selector};
use crate::secret::{EnvValue, SecretRef};
use crate::spec::SpecError;
use crate::units::serde_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most files one config writes.
pub const MAX_FILES: usize = 100;
/// Most bytes of one file's content.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// Most environment variables one config sets.
pub const MAX_ENV: usize = 100;
/// The longest a setup script may be given.
pub const MAX_SETUP_TIMEOUT: Duration = Duration::from_secs(3600);
/// A setup's time limit when none is given.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// One file a config writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Relative to the worker's managed directory (`$ROTA_CONFIG_DIR`); no `..`.
    pub path: String,
    /// The file's content (text); empty when `secret` gives it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Take the content from a secret's key instead (`NAME/KEY`), resolved by the server
    /// for the workers the config reaches: the stored config holds the reference only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Permission bits, e.g. `0644` or `0755` [default: 0644].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl FileSpec {
    /// The permission bits (`0644` when not given).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
            .unwrap_or(0o644)
    }
}

/// The script a config runs before the worker takes work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Run with `sh -c` in the managed directory, with the config's `env`.
    pub run: String,
    /// Time limit [default: 10m].
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "5m"))]
    pub timeout: Option<Duration>,
}

impl Setup {
    /// The time limit in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_SETUP_TIMEOUT)
    }
}

/// A `WorkerConfig`'s spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerConfigSpec {
    /// The workers it applies to.
    pub selector: Selector,
    /// Variables every step of a matching worker sees (a job's own env wins): strings or
    /// `{secret: NAME/KEY}` references, resolved by the server for the matching workers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Files written to the managed directory, removed when the config no longer applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// Run before the worker takes work, and again when the config's generation changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Setup>,
    /// Project name → the directory it lives in on these workers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, String>,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

/// A variable name a step can be given: letters, digits and `_`, not first a digit, and
/// not `ROTA_*` (rota's own).
fn env_name_ok(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.starts_with("ROTA_")
}

/// A relative path without `..`, `.` or empty parts.
fn relative_ok(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl WorkerConfigSpec {
    /// Every secret reference of the config with the field naming it (`env.TOKEN`,
    /// `files[0].secret`).
    pub fn secret_refs(&self) -> Vec<(String, SecretRef)> {
        let mut out: Vec<(String, SecretRef)> =
            self.env.iter().filter_map(|(k, v)| Some((format!("env.{k}"), v.secret()?.clone()))).collect();
        for (i, f) in self.files.iter().enumerate() {
            if let Some(r) = &f.secret {
                out.push((format!("files[{i}].secret"), SecretRef { secret: r.clone() }));
            }
        }
        out
    }

    /// Checks the selector, names, paths, modes and sizes, naming the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.selector.validate()?;
        limits::check_count("env", self.env.len(), MAX_ENV)?;
        for (k, v) in &self.env {
            if !env_name_ok(k) {
                return Err(err(
                    format!("env.{k}"),
                    "a variable name uses letters, digits and _ (not first a digit), and not the ROTA_ prefix",
                ));
            }
            match v {
                EnvValue::Plain(v) => limits::check_text(&format!("env.{k}"), v, MAX_FILE_BYTES)?,
                EnvValue::Secret(r) => r.validate(&format!("env.{k}"))?,
            }
        }
        limits::check_count("files", self.files.len(), MAX_FILES)?;
        let mut seen = std::collections::HashSet::new();
        for (i, f) in self.files.iter().enumerate() {
            if !relative_ok(&f.path) || f.path.len() > 1024 {
                return Err(err(
                    format!("files[{i}].path"),
                    "a relative path inside the managed directory (no leading /, no . or .. parts)",
                ));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(err(format!("files[{i}].path"), format!("`{}` is written twice", f.path)));
            }
            if let Some(r) = &f.secret {
                if !f.content.is_empty() {
                    return Err(err(format!("files[{i}].secret"), "give `content` or `secret`, not both"));
                }
                SecretRef { secret: r.clone() }.validate(&format!("files[{i}].secret"))?;
            }
            if f.content.len() > MAX_FILE_BYTES {
                return Err(err(
                    format!("files[{i}].content"),
                    format!("is {} bytes; the limit is {MAX_FILE_BYTES}", f.content.len()),
                ));
            }
            if let Some(m) = &f.mode
                && !u32::from_str_radix(m.trim_start_matches("0o"), 8).is_ok_and(|b| b <= 0o777)
            {
                return Err(err(
                    format!("files[{i}].mode"),
                    format!("`{m}` is not a mode such as 0644 or 0755"),
                ));
            }
        }
        if let Some(s) = &self.setup {
            if s.run.trim().is_empty() {
                return Err(err("setup.run", "empty"));
            }
            limits::check_text("setup.run", &s.run, MAX_FILE_BYTES)?;
            if s.timeout.is_some_and(|t| t.is_zero() || t > MAX_SETUP_TIMEOUT) {
                return Err(err("setup.timeout", "must be more than 0 and at most 1h"));
            }
        }
        for (name, dir) in &self.projects {
            limits::check_name(&format!("projects.{name}"), name)?;
            if !dir.starts_with('/') {
                return Err(err(format!("projects.{name}"), "an absolute directory on the worker's host"));
            }
        }
        Ok(())
    }
}

/// The tag a worker mapping project `name` carries, and a job naming the project asks
/// for: how such a job reaches only workers that map it.
pub fn project_tag(name: &str) -> String {
    format!("{PROJECT_TAG_PREFIX}{name}")
}

/// The prefix of [`project_tag`]s.
pub const PROJECT_TAG_PREFIX: &str = "project:";

/// The variable naming a job's project for its steps.
pub const PROJECT_ENV: &str = "ROTA_PROJECT";

/// A config as the matcher sees it.
#[derive(Clone, Debug)]
pub struct DeclaredConfig<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its generation.
    pub generation: i64,
    /// Its spec.
    pub spec: &'a WorkerConfigSpec,
}

/// One config that applies to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Matched {
    /// The config's name.
    pub name: String,
    /// Its generation.
    pub generation: i64,
    /// Its spec; as handed to a worker, with every secret reference resolved (the server
    /// fills the values in for this worker only).
    pub spec: WorkerConfigSpec,
    /// The variables of `spec.env` a secret filled in: the worker masks their values in
    /// step output and refuses them in `$ROTA_OUTPUT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// The paths of `spec.files` a secret filled in (masked like `secret_env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<String>,
}

/// Every config whose selector matches `m`, in name order (the order they are applied in:
/// a later config's variable of the same name wins).
pub fn matching<'a>(configs: impl IntoIterator<Item = DeclaredConfig<'a>>, m: Member<'_>) -> Vec<Matched> {
    let mut out: Vec<Matched> = configs
        .into_iter()
        .filter(|c| c.spec.selector.matches(m))
        .map(|c| Matched {
            name: c.name.to_string(),
            generation: c.generation,
            spec: c.spec.clone(),
            secret_env: Vec::new(),
            secret_files: Vec::new(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all() -> Selector {
        Selector { workers: vec!["*".into()], ..Selector::default() }
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = WorkerConfigSpec { selector: all(), ..WorkerConfigSpec::default() };
        s.validate().unwrap();
        s.env.insert("ROTA_X".into(), "1".into());
        assert_eq!(s.validate().unwrap_err().path, "env.ROTA_X");
        s.env.clear();
        s.files.push(FileSpec {
            path: "../etc/passwd".into(),
            content: String::new(),
            secret: None,
            mode: None,
        });
        assert_eq!(s.validate().unwrap_err().path, "files[0].path");
        s.files[0].path = "bin/tool".into();
        s.files[0].mode = Some("0999".into());
        assert_eq!(s.validate().unwrap_err().path, "files[0].mode");
        s.files[0].mode = Some("0755".into());
        assert_eq!(s.files[0].mode_bits(), 0o755);
        s.validate().unwrap();
        s.files[0].secret = Some("no-key".into());
        assert_eq!(s.validate().unwrap_err().path, "files[0].secret");
        s.files[0].secret = Some("tls/key.pem".into());
        s.validate().unwrap();
        s.projects.insert("demo".into(), "relative".into());
        assert_eq!(s.validate().unwrap_err().path, "projects.demo");
        s.projects.insert("demo".into(), "/srv/demo".into());
        s.setup = Some(Setup { run: " ".into(), timeout: None });
        assert_eq!(s.validate().unwrap_err().path, "setup.run");
    }

    #[test]
    fn matching_configs_come_in_name_order() {
        let a = WorkerConfigSpec { selector: all(), ..WorkerConfigSpec::default() };
        let b = WorkerConfigSpec {
            selector: Selector { hosts: vec!["other".into()], ..Selector::default() },
            ..WorkerConfigSpec::default()
        };
        let tags = Vec::new();
        let m = Member { name: "w", host: "h", tags: &tags };
        let got = matching(
            [
                DeclaredConfig { name: "zeta", generation: 2, spec: &a },
                DeclaredConfig { name: "other-host", generation: 1, spec: &b },
                DeclaredConfig { name: "alpha", generation: 5, spec: &a },
            ],
            m,
        );
        assert_eq!(
            got.iter().map(|c| (c.name.as_str(), c.generation)).collect::<Vec<_>>(),
            [("alpha", 5), ("zeta", 2)]
        );
    }
}
