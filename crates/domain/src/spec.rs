//! The job document: what users submit with `rota job submit -f` or `POST /api/v1/jobs`.
//!
//! Field names here are the contract (snake_case, as PRODUCT.md writes them). Validation
//! names the offending field by path (`steps[2].needs[0]`) so errors point at the input.

use crate::limits::{self, LimitError};
use crate::secret::{EnvValue, SecretRef, SplitEnv};
use crate::units::{serde_duration, serde_size};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Queue used when a job names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Per-step log cap when a step names none (the tail is kept, the cut is marked).
pub const DEFAULT_LOG_CAP: u64 = 64 << 20;
/// A lost attempt (worker crashed, partitioned or superseded) is retried until the step has
/// had at least this many attempts, even if its retry policy allows fewer: a crashed
/// machine is not the step's fault. `on_lost: fail` opts out.
pub const LOST_RETRY_FLOOR: u32 = 3;

/// A job: one or more steps forming a DAG, with a target and scheduling hints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Optional human name, shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The namespace the job belongs to: only workers of this namespace claim it, and
    /// commands of another namespace do not see it. Left out of documents when `default`.
    #[serde(
        default = "crate::namespace::default_owned",
        skip_serializing_if = "crate::namespace::is_default"
    )]
    pub namespace: String,
    /// Queue the job's steps are claimed from.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Higher runs first among claimable steps.
    #[serde(default)]
    pub priority: i32,
    /// Which workers may run it.
    #[serde(default)]
    pub target: Target,
    /// Environment for every step (a step's own `env` wins). A value is a string or a
    /// reference to a secret's key (`{secret: NAME/KEY}`), resolved when a step is handed
    /// to its worker: the stored document holds the reference only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Submitting twice with the same key yields one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// After this instant the job fails with reason `deadline` and nothing more starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Run in this project's directory on workers that map it (a `WorkerConfig`'s
    /// `projects`); a job naming one only goes to such workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The steps, in document order.
    pub steps: Vec<StepSpec>,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

/// Which workers may take a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Only the worker on this host (or with this worker name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only workers carrying every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Target {
    /// Whether a worker with this name, host and tags may run the job. `host` matches the
    /// worker's host name or its worker name (so `--on web1` works for either).
    pub fn admits(&self, worker_name: &str, worker_host: &str, worker_tags: &[String]) -> bool {
        self.host.as_deref().is_none_or(|h| h == worker_host || h == worker_name)
            && self.tags.iter().all(|t| worker_tags.contains(t))
    }
}

/// One step: a shell script run by `sh -c` on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the job.
    pub name: String,
    /// The shell script.
    pub run: String,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Wall-clock limit for one attempt; past it the process group is killed.
    #[serde(default, with = "serde_duration", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    pub timeout: Option<Duration>,
    /// How often and how soon to try again after a failure.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// What a lost attempt (worker gone, lease expired) means for this step.
    #[serde(default)]
    pub on_lost: OnLost,
    /// Step-specific environment (strings or `{secret: NAME/KEY}` references).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Memory limit for the step's whole process group.
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Keep the attempt directory after the step ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_workspace: bool,
    /// Per-attempt log cap in bytes (default 64 MiB); the tail is kept.
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub log_cap: Option<u64>,
}

impl StepSpec {
    /// A step with defaults for everything but its name and script.
    pub fn new(name: impl Into<String>, run: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            run: run.into(),
            needs: Vec::new(),
            timeout: None,
            retry: RetryPolicy::default(),
            on_lost: OnLost::default(),
            env: BTreeMap::new(),
            memory_limit: None,
            keep_workspace: false,
            log_cap: None,
        }
    }
}

/// Retry policy of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first included (1 = no retries).
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// Delay before each retry.
    #[serde(default)]
    pub backoff: Backoff,
}

fn one() -> u32 {
    1
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 1, backoff: Backoff::default() }
    }
}

/// Exponential backoff with jitter: `min(initial * factor^(n-1), max)`, then ± `jitter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(default = "initial_backoff", with = "serde_duration_req")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s"))]
    pub initial: Duration,
    /// Upper bound on any delay.
    #[serde(default = "max_backoff", with = "serde_duration_req")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "5m"))]
    pub max: Duration,
    /// Growth per retry.
    #[serde(default = "two")]
    pub factor: f64,
    /// Fraction of the delay added or removed at random (0.0–1.0).
    #[serde(default = "fifth")]
    pub jitter: f64,
}

fn initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn two() -> f64 {
    2.0
}
fn fifth() -> f64 {
    0.2
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: initial_backoff(), max: max_backoff(), factor: 2.0, jitter: 0.2 }
    }
}

mod serde_duration_req {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        crate::units::serde_duration::deserialize(d)?
            .ok_or_else(|| serde::de::Error::custom("a duration is required"))
    }
    pub(super) fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        crate::units::serde_duration::serialize(&Some(*v), s)
    }
}

/// What a lost attempt means for a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnLost {
    /// Run it again (within the retry limit, at least [`LOST_RETRY_FLOOR`] attempts).
    #[default]
    Retry,
    /// Fail the step: for steps that must never run twice.
    Fail,
}

/// A job document that cannot be accepted; `path` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where in the document, e.g. `steps[1].needs[0]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

impl From<LimitError> for SpecError {
    fn from(e: LimitError) -> Self {
        SpecError { path: e.field, message: e.message }
    }
}

impl JobSpec {
    /// A job of `steps` with defaults for everything else (the default queue, priority 0,
    /// any worker, no env, key or deadline): what a document naming only its steps means.
    pub fn new(steps: Vec<StepSpec>) -> Self {
        Self {
            name: None,
            namespace: crate::namespace::default_owned(),
            queue: default_queue(),
            priority: 0,
            target: Target::default(),
            env: BTreeMap::new(),
            idempotency_key: None,
            deadline: None,
            project: None,
            steps,
        }
    }

    /// Routes a job naming a project: it asks for the `project:NAME` tag workers mapping
    /// the project carry, and its steps see `ROTA_PROJECT` (the worker runs them in the
    /// project's directory). Idempotent; the server calls it before storing a job.
    pub fn route_project(&mut self) {
        if let Some(p) = &self.project {
            let tag = crate::hostconfig::project_tag(p);
            if !self.target.tags.contains(&tag) {
                self.target.tags.push(tag);
            }
            self.env.insert(crate::hostconfig::PROJECT_ENV.to_string(), p.clone().into());
        }
    }

    /// Checks the document: names, references, the DAG, limits. Returns the first problem.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(name) = &self.name {
            limits::check_text("name", name, limits::MAX_JOB_NAME)?;
        }
        crate::namespace::check("namespace", &self.namespace)?;
        limits::check_name("queue", &self.queue)?;
        if let Some(p) = &self.project {
            limits::check_name("project", p)?;
        }
        if let Some(k) = &self.idempotency_key {
            limits::check_text("idempotency_key", k, limits::MAX_IDEMPOTENCY_KEY)?;
        }
        if let Some(h) = &self.target.host {
            limits::check_text("target.host", h, limits::MAX_HOST)?;
        }
        limits::check_count("target.tags", self.target.tags.len(), limits::MAX_TAGS)?;
        for (i, t) in self.target.tags.iter().enumerate() {
            limits::check_text(&format!("target.tags[{i}]"), t, limits::MAX_NAME)?;
        }
        limits::check_env_map("env", self.env.iter())?;
        if self.steps.is_empty() {
            return Err(err("steps", "a job needs at least one step"));
        }
        limits::check_count("steps", self.steps.len(), limits::MAX_STEPS)?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            let p = format!("steps[{i}]");
            limits::check_name(&format!("{p}.name"), &s.name)?;
            if index.insert(&s.name, i).is_some() {
                return Err(err(format!("{p}.name"), format!("step name '{}' is used twice", s.name)));
            }
            if s.run.trim().is_empty() {
                return Err(err(format!("{p}.run"), "the script is empty"));
            }
            if s.run.contains('\0') {
                return Err(err(format!("{p}.run"), "the script contains a NUL byte"));
            }
            limits::check_count(&format!("{p}.needs"), s.needs.len(), limits::MAX_STEPS)?;
            if s.timeout == Some(Duration::ZERO) {
                return Err(err(format!("{p}.timeout"), "must be greater than zero"));
            }
            if s.retry.max_attempts == 0 || s.retry.max_attempts > 100 {
                return Err(err(format!("{p}.retry.max_attempts"), "must be between 1 and 100"));
            }
            let b = &s.retry.backoff;
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(err(format!("{p}.retry.backoff.jitter"), "must be between 0 and 1"));
            }
            if !(b.factor >= 1.0 && b.factor <= 100.0) {
                return Err(err(format!("{p}.retry.backoff.factor"), "must be between 1 and 100"));
            }
            if s.log_cap == Some(0) {
                return Err(err(format!("{p}.log_cap"), "must be greater than zero"));
            }
            limits::check_env_map(&format!("{p}.env"), s.env.iter())?;
            // What the worker will exec: the job's env overlaid with the step's (a secret's
            // value is unknown here; the worker checks the whole at spawn).
            let merged = self.step_env(s);
            limits::check_exec(
                &p,
                &s.run,
                merged.plain.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
                limits::MAX_EXEC_BYTES,
            )?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for (j, n) in s.needs.iter().enumerate() {
                let p = format!("steps[{i}].needs[{j}]");
                if n == &s.name {
                    return Err(err(p, format!("step '{n}' cannot need itself")));
                }
                if !index.contains_key(n.as_str()) {
                    return Err(err(p, format!("no step named '{n}'")));
                }
                if !seen.insert(n) {
                    return Err(err(p, format!("'{n}' is listed twice")));
                }
            }
        }
        if let Some(cycle) = self.find_cycle(&index) {
            return Err(err("steps", format!("the needs form a cycle: {}", cycle.join(" -> "))));
        }
        Ok(())
    }

    /// The environment `step` runs with: the job's env overlaid with the step's, split into
    /// plain values and the variables a secret fills in.
    pub fn step_env(&self, step: &StepSpec) -> SplitEnv {
        crate::secret::split_env(self.env.iter().chain(step.env.iter()))
    }

    /// Every secret reference of the document with the field naming it
    /// (`steps[0].env.TOKEN`, `env.TOKEN`), in document order.
    pub fn secret_refs(&self) -> Vec<(String, &SecretRef)> {
        let mut out: Vec<(String, &SecretRef)> =
            self.env.iter().filter_map(|(k, v)| Some((format!("env.{k}"), v.secret()?))).collect();
        for (i, s) in self.steps.iter().enumerate() {
            out.extend(s.env.iter().filter_map(|(k, v)| Some((format!("steps[{i}].env.{k}"), v.secret()?))));
        }
        out
    }

    fn find_cycle(&self, index: &HashMap<&str, usize>) -> Option<Vec<String>> {
        // Iterative DFS with colours; returns the cycle's step names for the error.
        let n = self.steps.len();
        let mut colour = vec![0u8; n];
        for start in 0..n {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let needs = &self.steps[node].needs;
                if *next < needs.len() {
                    let dep = index[needs[*next].as_str()];
                    *next += 1;
                    match colour[dep] {
                        0 => {
                            colour[dep] = 1;
                            stack.push((dep, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|(x, _)| *x == dep).unwrap_or(0);
                            let mut names: Vec<String> =
                                stack[pos..].iter().map(|(x, _)| self.steps[*x].name.clone()).collect();
                            names.push(self.steps[dep].name.clone());
                            return Some(names);
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(mut s: StepSpec, n: &[&str]) -> StepSpec {
        s.needs = n.iter().map(|x| x.to_string()).collect();
        s
    }

    #[test]
    fn accepts_a_diamond() {
        let j = JobSpec::new(vec![
            StepSpec::new("a", "true"),
            needs(StepSpec::new("b", "true"), &["a"]),
            needs(StepSpec::new("c", "true"), &["a"]),
            needs(StepSpec::new("d", "true"), &["b", "c"]),
        ]);
        assert_eq!(j.validate(), Ok(()));
    }

    #[test]
    fn names_the_bad_field() {
        let cases = vec![
            (JobSpec::new(vec![]), "steps"),
            (JobSpec::new(vec![StepSpec::new("a", " ")]), "steps[0].run"),
            (JobSpec::new(vec![StepSpec::new("a", "x"), StepSpec::new("a", "y")]), "steps[1].name"),
            (JobSpec::new(vec![needs(StepSpec::new("a", "x"), &["zz"])]), "steps[0].needs[0]"),
            (JobSpec::new(vec![needs(StepSpec::new("a", "x"), &["a"])]), "steps[0].needs[0]"),
            (
                JobSpec::new(vec![
                    needs(StepSpec::new("a", "x"), &["b"]),
                    needs(StepSpec::new("b", "x"), &["a"]),
                ]),
                "steps",
            ),
        ];
        for (j, path) in cases {
            assert_eq!(j.validate().unwrap_err().path, path, "{j:?}");
        }
    }

    #[test]
    fn limits_name_the_field_and_the_limit() {
        let mut named = JobSpec::new(vec![StepSpec::new("a", "true")]);
        named.name = Some("n".repeat(1 << 20));
        let e = named.validate().unwrap_err();
        assert_eq!(e.path, "name");
        assert!(e.message.contains("256"), "{e}");
        named.name = Some("a\0b".into());
        assert_eq!(named.validate().unwrap_err().path, "name");

        let mut env = JobSpec::new(vec![StepSpec::new("a", "true")]);
        env.env.insert("K".repeat(100 * 1024), "v".into());
        let e = env.validate().unwrap_err();
        assert!(e.path.starts_with("env.KKK"), "{e}");
        assert!(e.message.contains("1024"), "{e}");

        let mut s = StepSpec::new("a", "true");
        s.env.insert("BIG".into(), "x".repeat(128 * 1024).into());
        let e = JobSpec::new(vec![s]).validate().unwrap_err();
        assert_eq!(e.path, "steps[0].env.BIG");
        assert!(e.message.contains("131071"), "{e}");

        // Each variable fits, together they do not.
        let mut many = JobSpec::new(vec![StepSpec::new("a", "true")]);
        for i in 0..12 {
            many.env.insert(format!("V{i}"), "x".repeat(100_000).into());
        }
        let e = many.validate().unwrap_err();
        assert_eq!(e.path, "steps[0]");
        assert!(e.message.contains(&crate::limits::MAX_EXEC_BYTES.to_string()), "{e}");

        let mut tags = JobSpec::new(vec![StepSpec::new("a", "true")]);
        tags.target.tags = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(tags.validate().unwrap_err().path, "target.tags");
    }

    #[test]
    fn parses_durations_and_sizes_in_documents() {
        let j: JobSpec = serde_json::from_str(
            r#"{"steps":[{"name":"a","run":"true","timeout":"1m","memory_limit":"1KiB","retry":{"max_attempts":3,"backoff":{"initial":"2s"}}}]}"#,
        )
        .unwrap();
        assert_eq!(j.queue, "default");
        assert_eq!(j.steps[0].timeout, Some(Duration::from_secs(60)));
        assert_eq!(j.steps[0].memory_limit, Some(1024));
        assert_eq!(j.steps[0].retry.backoff.initial, Duration::from_secs(2));
        let bad = serde_json::from_str::<JobSpec>(r#"{"steps":[],"stpes":1}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn new_means_what_a_document_of_only_steps_means() {
        let parsed: JobSpec = serde_json::from_str(r#"{"steps":[{"name":"a","run":"true"}]}"#).unwrap();
        assert_eq!(JobSpec::new(vec![StepSpec::new("a", "true")]), parsed);
    }
}
