//! The `Workflow` resource's spec: named steps (a job's steps), typed inputs with defaults
//! and a default target; the naming rules that let inputs reach steps as
//! `ROTA_INPUT_<NAME>` and a step's outputs reach the steps that need it as
//! `ROTA_OUT_<STEP>_<KEY>`; turning a workflow and the inputs given to `rota run` into the
//! job that runs it; and reading what a step wrote to `$ROTA_OUTPUT`. Paths in errors are
//! relative to the resource's `spec`.

use crate::limits;
use crate::spec::{JobSpec, SpecError, StepSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Prefix of the variable each input reaches every step as.
pub const INPUT_ENV_PREFIX: &str = "ROTA_INPUT_";
/// Prefix of the variable a needed step's output reaches a step as.
pub const OUTPUT_ENV_PREFIX: &str = "ROTA_OUT_";
/// The variable naming the file a step writes its outputs to.
pub const OUTPUT_FILE_ENV: &str = "ROTA_OUTPUT";
/// Most bytes of outputs one step may write; past it the step fails, saying so.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Most inputs one workflow declares.
pub const MAX_INPUTS: usize = 256;

/// What a `Workflow` declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The values a run takes, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Where its runs go unless `rota run` says otherwise.
    #[serde(default, skip_serializing_if = "WorkflowTarget::is_any")]
    pub target: WorkflowTarget,
    /// Environment for every step (a step's own `env` wins); strings or secret references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, crate::secret::EnvValue>,
    /// Runs go to workers that map this project and run in its directory there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The steps, as in a job document.
    pub steps: Vec<StepSpec>,
}

/// A workflow's default target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowTarget {
    /// Queue its steps are claimed from (the default queue if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Only the worker on this host (or with this worker name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only workers carrying every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl WorkflowTarget {
    fn is_any(&self) -> bool {
        *self == WorkflowTarget::default()
    }
}

/// The type of an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Any text.
    #[default]
    String,
    /// A whole number (`-3`, `42`).
    Integer,
    /// A number (`1.5`, `2`).
    Number,
    /// `true` or `false`.
    Boolean,
}

impl InputType {
    fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
        }
    }

    /// `text` in this type's canonical spelling (what the step sees), or `None` if it is
    /// not of this type.
    pub fn check(self, text: &str) -> Option<String> {
        match self {
            InputType::String => Some(text.to_string()),
            InputType::Integer => text.trim().parse::<i64>().ok().map(|n| n.to_string()),
            InputType::Number => {
                text.trim().parse::<f64>().ok().filter(|n| n.is_finite()).map(|_| text.trim().to_string())
            }
            InputType::Boolean => match text.trim() {
                "true" => Some("true".into()),
                "false" => Some("false".into()),
                _ => None,
            },
        }
    }
}

/// A default as a document may write it: a string, a number or a boolean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// Text.
    Text(String),
}

impl Scalar {
    /// As a step would see it.
    pub fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// One declared input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Its type (`string` if unset).
    #[serde(default, rename = "type")]
    pub kind: InputType,
    /// Its value when a run gives none; without one, every run must give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Scalar>,
    /// What it means, for `rota get` and `rota run --help`-like listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Why the inputs given to a run are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The workflow declares no such input.
    #[error("unknown input `{name}`; the workflow takes: {known}")]
    Unknown {
        /// As given.
        name: String,
        /// The declared inputs, comma-separated (or "none").
        known: String,
    },
    /// An input without a default was not given.
    #[error("input `{name}` is required (it has no default)")]
    Missing {
        /// The input.
        name: String,
    },
    /// A value that is not of the input's type.
    #[error("input `{name}` is of type {expected}; `{given}` is not")]
    WrongType {
        /// The input.
        name: String,
        /// Its declared type.
        expected: &'static str,
        /// The value given.
        given: String,
    },
    /// The job the inputs make is not a valid job (too large an input, say).
    #[error("{0}")]
    Job(SpecError),
}

/// Why a step's outputs are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// More than [`MAX_OUTPUT_BYTES`].
    #[error("the step wrote {bytes} bytes to $ROTA_OUTPUT; the limit is {MAX_OUTPUT_BYTES}")]
    TooLarge {
        /// What it wrote.
        bytes: usize,
    },
    /// The file could not be read as a plain file.
    #[error("$ROTA_OUTPUT cannot be read: {0}")]
    Unreadable(String),
    /// A line that is not `KEY=value` with a valid key.
    #[error("$ROTA_OUTPUT line {line}: {problem}")]
    BadLine {
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Whether `name` can become part of an environment variable: letters, digits and `_`.
fn env_part_ok(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable input `name` reaches every step as.
pub fn input_env(name: &str) -> String {
    format!("{INPUT_ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// The variable output `key` of step `step` reaches the steps that need it as.
pub fn output_env(step: &str, key: &str) -> String {
    format!("{OUTPUT_ENV_PREFIX}{}_{}", step.to_ascii_uppercase(), key.to_ascii_uppercase())
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

impl WorkflowSpec {
    /// Checks the declaration: input names and defaults, step names that can carry outputs,
    /// and everything a job of these steps must satisfy (with every default input filled).
    pub fn validate(&self) -> Result<(), SpecError> {
        limits::check_count("inputs", self.inputs.len(), MAX_INPUTS)?;
        let mut vars: HashMap<String, &str> = HashMap::new();
        for (name, input) in &self.inputs {
            let p = format!("inputs.{name}");
            if !env_part_ok(name) || name.len() > limits::MAX_NAME {
                return Err(err(
                    p,
                    "an input name uses only letters, digits and _ (it becomes ROTA_INPUT_<NAME>)",
                ));
            }
            if let Some(other) = vars.insert(input_env(name), name) {
                return Err(err(p, format!("`{name}` and `{other}` both become {}", input_env(name))));
            }
            if let Some(d) = &input.default
                && input.kind.check(&d.text()).is_none()
            {
                return Err(err(format!("{p}.default"), format!("is not of type {}", input.kind.as_str())));
            }
            if let Some(text) = &input.description {
                limits::check_text(&format!("{p}.description"), text, limits::MAX_JOB_NAME)?;
            }
        }
        let mut steps: HashMap<String, &str> = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            let p = format!("steps[{i}].name");
            if !env_part_ok(&s.name) {
                return Err(err(
                    p,
                    format!(
                        "'{}': a workflow's step name uses only letters, digits and _ (it becomes ROTA_OUT_<STEP>_<KEY>)",
                        s.name
                    ),
                ));
            }
            if let Some(other) = steps.insert(s.name.to_ascii_uppercase(), &s.name)
                && other != s.name
            {
                return Err(err(
                    p,
                    format!(
                        "`{}` and `{other}` both become ROTA_OUT_{}_…",
                        s.name,
                        s.name.to_ascii_uppercase()
                    ),
                ));
            }
        }
        let defaults: BTreeMap<String, String> = self
            .inputs
            .iter()
            .map(|(n, i)| (n.clone(), i.default.as_ref().map(Scalar::text).unwrap_or_default()))
            .collect();
        self.job_with(None, &defaults, None).validate()
    }

    /// The job that runs this workflow (named `name`) with `given` inputs (text, as typed
    /// on the command line); `on` overrides the target host. Unknown inputs, missing ones
    /// without a default and values of the wrong type are refused, naming the input.
    pub fn job(
        &self,
        name: &str,
        given: &BTreeMap<String, String>,
        on: Option<&str>,
    ) -> Result<JobSpec, InputError> {
        let known = || {
            if self.inputs.is_empty() {
                "none".to_string()
            } else {
                self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        if let Some(unknown) = given.keys().find(|k| !self.inputs.contains_key(*k)) {
            return Err(InputError::Unknown { name: unknown.clone(), known: known() });
        }
        let mut values = BTreeMap::new();
        for (n, input) in &self.inputs {
            let text = match (given.get(n), &input.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.text(),
                (None, None) => return Err(InputError::Missing { name: n.clone() }),
            };
            let value = input.kind.check(&text).ok_or_else(|| InputError::WrongType {
                name: n.clone(),
                expected: input.kind.as_str(),
                given: text.clone(),
            })?;
            values.insert(n.clone(), value);
        }
        let job = self.job_with(Some(name), &values, on);
        job.validate().map_err(InputError::Job)?;
        Ok(job)
    }

    fn job_with(&self, name: Option<&str>, inputs: &BTreeMap<String, String>, on: Option<&str>) -> JobSpec {
        let mut job = JobSpec::new(self.steps.clone());
        job.name = name.map(str::to_string);
        if let Some(q) = &self.target.queue {
            job.queue = q.clone();
        }
        job.target.host = on.map(str::to_string).or_else(|| self.target.host.clone());
        job.target.tags = self.target.tags.clone();
        job.env = self.env.clone();
        job.project = self.project.clone();
        for (n, v) in inputs {
            job.env.insert(input_env(n), v.clone().into());
        }
        // Every job a workflow makes (`rota run`, a schedule's fire) is routed the same.
        job.route_project();
        job
    }
}

/// Reads what a step wrote to `$ROTA_OUTPUT`: `KEY=value` lines (the value is the rest of
/// the line, a CRLF ending taken off; blank lines are skipped; a later key wins). Keys use
/// letters, digits and `_`; a value holds no carriage return or NUL. What this accepts,
/// [`check_outputs`] accepts: the server never refuses what a worker read.
pub fn parse_outputs(bytes: &[u8]) -> Result<BTreeMap<String, String>, OutputError> {
    if bytes.len() > MAX_OUTPUT_BYTES {
        return Err(OutputError::TooLarge { bytes: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| OutputError::BadLine {
        line: line_of(bytes, e.valid_up_to()),
        problem: "not UTF-8".into(),
    })?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |problem: &str| OutputError::BadLine { line: i + 1, problem: problem.to_string() };
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| bad("expected KEY=value"))?;
        if !env_part_ok(key) {
            return Err(bad("the key uses only letters, digits and _"));
        }
        if value.contains(['\r', '\0']) {
            return Err(bad("the value holds a carriage return or a NUL byte"));
        }
        out.insert(key.to_string(), value.to_string());
    }
    check_outputs(&out)?;
    Ok(out)
}

/// Checks outputs received over the API: the rules [`parse_outputs`] applies to the file
/// (keys of letters, digits and `_`, values on one line, [`MAX_OUTPUT_BYTES`] in all).
pub fn check_outputs(outputs: &BTreeMap<String, String>) -> Result<(), OutputError> {
    let bytes: usize = outputs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if bytes > MAX_OUTPUT_BYTES {
        return Err(OutputError::TooLarge { bytes });
    }
    for (i, (k, v)) in outputs.iter().enumerate() {
        let bad = |problem: &str| OutputError::BadLine { line: i + 1, problem: problem.to_string() };
        if !env_part_ok(k) {
            return Err(bad("the key uses only letters, digits and _"));
        }
        if v.contains(['\n', '\r', '\0']) {
            return Err(bad("the value spans lines or holds a NUL byte"));
        }
    }
    Ok(())
}

/// The variables a step sees from the steps it needs: `ROTA_OUT_<STEP>_<KEY>` for each
/// output of each needed step (`outputs`: per needed step, what it wrote).
pub fn needed_outputs_env<'a>(
    outputs: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (step, values) in outputs {
        for (k, v) in values {
            env.insert(output_env(step, k), v.clone());
        }
    }
    env
}

fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes[..at].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wf(inputs: &[(&str, InputType, Option<Scalar>)], steps: Vec<StepSpec>) -> WorkflowSpec {
        WorkflowSpec {
            inputs: inputs
                .iter()
                .map(|(n, k, d)| {
                    (n.to_string(), InputSpec { kind: *k, default: d.clone(), description: None })
                })
                .collect(),
            target: WorkflowTarget::default(),
            env: BTreeMap::new(),
            project: None,
            steps,
        }
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn inputs_reach_every_step_typed_and_defaulted() {
        let w = wf(
            &[("count", InputType::Integer, Some(Scalar::Int(3))), ("who", InputType::String, None)],
            vec![StepSpec::new("a", "echo $ROTA_INPUT_WHO")],
        );
        w.validate().unwrap();
        let job = w.job("greet", &given(&[("who", "ada")]), Some("web1")).unwrap();
        assert_eq!(job.env.get("ROTA_INPUT_WHO").and_then(|v| v.plain()), Some("ada"));
        assert_eq!(job.env.get("ROTA_INPUT_COUNT").and_then(|v| v.plain()), Some("3"));
        assert_eq!((job.name.as_deref(), job.target.host.as_deref()), (Some("greet"), Some("web1")));
        assert_eq!(
            w.job("greet", &given(&[("who", "x"), ("count", "many")]), None).unwrap_err(),
            InputError::WrongType { name: "count".into(), expected: "integer", given: "many".into() }
        );
        assert_eq!(
            w.job("greet", &given(&[]), None).unwrap_err(),
            InputError::Missing { name: "who".into() }
        );
        let e = w.job("greet", &given(&[("who", "x"), ("colour", "red")]), None).unwrap_err().to_string();
        assert_eq!(e, "unknown input `colour`; the workflow takes: count, who");
    }

    #[test]
    fn names_that_cannot_become_variables_or_would_collide_are_refused() {
        let e =
            wf(&[("a-b", InputType::String, None)], vec![StepSpec::new("s", "true")]).validate().unwrap_err();
        assert_eq!(e.path, "inputs.a-b");
        let e = wf(
            &[("Tag", InputType::String, None), ("tag", InputType::String, None)],
            vec![StepSpec::new("s", "true")],
        )
        .validate()
        .unwrap_err();
        assert!(e.message.contains("ROTA_INPUT_TAG"), "{e:?}");
        let e = wf(&[], vec![StepSpec::new("build.x", "true")]).validate().unwrap_err();
        assert_eq!(e.path, "steps[0].name");
        let e = wf(&[], vec![StepSpec::new("b", "true"), StepSpec::new("B", "true")]).validate().unwrap_err();
        assert_eq!(e.path, "steps[1].name");
        let e = wf(
            &[("n", InputType::Integer, Some(Scalar::Text("x".into())))],
            vec![StepSpec::new("s", "true")],
        )
        .validate()
        .unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("inputs.n.default", "is not of type integer"));
    }

    #[test]
    fn the_steps_obey_the_job_rules() {
        let mut b = StepSpec::new("b", "true");
        b.needs = vec!["nope".into()];
        let e = wf(&[], vec![StepSpec::new("a", "true"), b]).validate().unwrap_err();
        assert_eq!(e.path, "steps[1].needs[0]");
    }

    #[test]
    fn what_the_worker_reads_the_server_accepts() {
        let out = parse_outputs(b"A=1\r\nB=2\r").unwrap();
        assert_eq!(out, given(&[("A", "1"), ("B", "2")]));
        check_outputs(&out).unwrap();
        for bad in [&b"A=x\ry\n"[..], b"A=x\0y\n"] {
            assert!(parse_outputs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outputs_are_key_value_lines_and_capped() {
        let out = parse_outputs(b"VERSION=1.2\n\nname=a=b\nVERSION=1.3\n").unwrap();
        assert_eq!(out, given(&[("VERSION", "1.3"), ("name", "a=b")]));
        assert_eq!(output_env("build", "version"), "ROTA_OUT_BUILD_VERSION");
        assert_eq!(
            parse_outputs(b"ok=1\nno equals\n").unwrap_err(),
            OutputError::BadLine { line: 2, problem: "expected KEY=value".into() }
        );
        let big = vec![b'x'; MAX_OUTPUT_BYTES + 1];
        assert_eq!(parse_outputs(&big).unwrap_err(), OutputError::TooLarge { bytes: MAX_OUTPUT_BYTES + 1 });
    }
}
