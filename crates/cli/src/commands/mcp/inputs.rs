//! The tools' inputs: one type per tool, whose JSON schema (schemars) is what `tools/list`
//! shows, and their parsing and checks. Every error names the field it is about; nothing
//! here calls the server.

use crate::args::{SubmitArgs, parse_duration};
use crate::job_flags::ARGV_STEP;
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::model::JsonObject;
use rota_domain::JobId;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The input schema of `T` for `tools/list`. Every input type's schema is an object (the
/// test `every_schema_is_an_object` checks), so the empty one is never shown in practice.
pub(super) fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|_| schema_for_empty_input())
}

/// `args` as `T`; the error names the field (`retries: invalid type: ...`, `unknown field
/// `x``, `missing field `id``).
pub(super) fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, String> {
    serde_path_to_error::deserialize(serde_json::Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { inner.to_string() } else { format!("{path}: {inner}") }
    })
}

/// `submit_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitJob {
    /// Shell command to run (with `sh -c`) as the job's step `main`. Give this, `steps`, or both.
    pub(super) command: Option<String>,
    /// Steps, each a shell command; a step may wait for others to succeed (`needs`).
    #[serde(default)]
    pub(super) steps: Vec<StepInput>,
    /// Job name, shown in listings.
    pub(super) name: Option<String>,
    /// Queue to submit to (default: `default`; job routing applies as for `rota job submit`).
    pub(super) queue: Option<String>,
    /// Time limit per attempt for steps that set none: `30s`, `10m`, `1h 30m`.
    pub(super) timeout: Option<String>,
    /// Retries after a failure, for steps that set none (0 to 99).
    pub(super) retries: Option<u32>,
    /// Submitting again with the same key returns the first job instead of a new one.
    pub(super) idempotency_key: Option<String>,
}

/// One step of `submit_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StepInput {
    /// The step's name (unique in the job).
    pub(super) name: String,
    /// Shell command (`sh -c`).
    pub(super) run: String,
    /// Steps that must succeed first.
    #[serde(default)]
    pub(super) needs: Vec<String>,
}

impl SubmitJob {
    /// The arguments `rota job submit` would have parsed from the same request, so the job
    /// is built, checked and routed by its one path.
    pub(super) fn into_submit_args(self) -> Result<SubmitArgs, String> {
        if self.command.is_none() && self.steps.is_empty() {
            return Err("command: nothing to run; give `command` (a shell command) or `steps`".into());
        }
        let timeout = match &self.timeout {
            Some(t) => Some(parse_duration(t).map_err(|e| format!("timeout: {e}"))?),
            None => None,
        };
        if let Some(r) = self.retries
            && r > 99
        {
            return Err(format!("retries: {r} is more than 99"));
        }
        let mut args = SubmitArgs {
            name: self.name,
            queue: self.queue,
            timeout,
            retries: self.retries,
            idempotency_key: self.idempotency_key,
            ..SubmitArgs::default()
        };
        for s in self.steps {
            if !s.needs.is_empty() {
                args.needs.push((s.name.clone(), s.needs.join(",")));
            }
            args.steps.push((s.name, s.run));
        }
        if let Some(command) = self.command {
            if command.trim().is_empty() {
                return Err("command: empty".into());
            }
            args.steps.push((ARGV_STEP.to_string(), command));
        }
        Ok(args)
    }
}

/// `run_workflow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunWorkflow {
    /// The workflow's name (declared with `apply_resources`; `get_resources` kind `workflow` lists them).
    pub(super) workflow: String,
    /// The workflow's inputs by name (values as text).
    #[serde(default)]
    pub(super) inputs: BTreeMap<String, String>,
    /// Run only on this host (host name or worker name).
    pub(super) on: Option<String>,
    /// Starting again with the same key returns the first run instead of a new one.
    pub(super) idempotency_key: Option<String>,
}

/// `list_jobs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListJobs {
    /// Only jobs in these states (comma-separated): queued, unschedulable, running,
    /// succeeded, failed, cancelled, revoked.
    pub(super) state: Option<String>,
    /// Only jobs of this queue.
    pub(super) queue: Option<String>,
    /// At most this many jobs, newest first (1 to 1000, default 50).
    pub(super) limit: Option<u32>,
}

impl ListJobs {
    /// The limit, checked.
    pub(super) fn limit(&self) -> Result<u32, String> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => Err(format!("limit: {n} is not between 1 and 1000")),
        }
    }
}

/// `show_job`, `cancel_job`, `retry_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobRef {
    /// The job's id (a UUID, as `submit_job` and `list_jobs` return it).
    pub(super) id: String,
}

/// `job_logs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobLogs {
    /// The job's id.
    pub(super) id: String,
    /// Only this step's output (default: every step's).
    pub(super) step: Option<String>,
    /// How much of the end of the output to return, in bytes (1 to 1048576, default 8192).
    pub(super) tail_bytes: Option<u32>,
}

impl JobLogs {
    /// The tail's size, checked.
    pub(super) fn tail_bytes(&self) -> Result<usize, String> {
        match self.tail_bytes {
            None => Ok(8192),
            Some(n @ 1..=1_048_576) => Ok(n as usize),
            Some(n) => Err(format!("tail_bytes: {n} is not between 1 and 1048576")),
        }
    }
}

/// `heal_workers`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HealWorkers {
    /// Only say which workers would be healed.
    #[serde(default)]
    pub(super) dry_run: bool,
    /// How long each healed worker may take to register (default `15s`).
    pub(super) wait_timeout: Option<String>,
}

impl HealWorkers {
    /// The wait, checked.
    pub(super) fn wait_timeout(&self) -> Result<Duration, String> {
        match &self.wait_timeout {
            None => Ok(Duration::from_secs(15)),
            Some(t) => parse_duration(t).map_err(|e| format!("wait_timeout: {e}")),
        }
    }
}

/// `apply_resources`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyResources {
    /// The documents, as `rota apply -f -` reads them: YAML (several separated by `---`
    /// lines) or one JSON document.
    pub(super) documents: String,
    /// Only say what would change (created, configured, unchanged).
    #[serde(default)]
    pub(super) dry_run: bool,
}

/// `get_resources`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetResources {
    /// The kind: workflow, schedule, workerpool, workerconfig or secret (plural forms too).
    pub(super) kind: String,
    /// One resource by name (default: every one of the kind).
    pub(super) name: Option<String>,
}

/// A job id field, parsed.
pub(super) fn job_id(field: &str, s: &str) -> Result<JobId, String> {
    s.trim().parse::<JobId>().map_err(|e| format!("{field}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: serde_json::Value) -> JsonObject {
        match v {
            serde_json::Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn every_schema_is_an_object() {
        assert!(schema_for_input::<SubmitJob>().is_ok());
        assert!(schema_for_input::<RunWorkflow>().is_ok());
        assert!(schema_for_input::<ListJobs>().is_ok());
        assert!(schema_for_input::<JobRef>().is_ok());
        assert!(schema_for_input::<JobLogs>().is_ok());
        assert!(schema_for_input::<HealWorkers>().is_ok());
        assert!(schema_for_input::<ApplyResources>().is_ok());
        assert!(schema_for_input::<GetResources>().is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e =
            parse::<SubmitJob>(args(serde_json::json!({"command": "true", "retries": "two"}))).unwrap_err();
        assert!(e.starts_with("retries: "), "{e}");
        let e = parse::<SubmitJob>(args(serde_json::json!({"comand": "true"}))).unwrap_err();
        assert!(e.contains("comand"), "{e}");
        let e = parse::<JobRef>(args(serde_json::json!({}))).unwrap_err();
        assert!(e.contains("`id`"), "{e}");
        let s: SubmitJob = parse(args(serde_json::json!({"command": "true", "timeout": "soon"}))).unwrap();
        assert!(s.into_submit_args().unwrap_err().starts_with("timeout: "));
        let s: SubmitJob = parse(args(serde_json::json!({"name": "x"}))).unwrap();
        assert!(s.into_submit_args().unwrap_err().starts_with("command: "));
        assert!(job_id("id", "nope").unwrap_err().starts_with("id: "));
        let l: ListJobs = parse(args(serde_json::json!({"limit": 0}))).unwrap();
        assert!(l.limit().unwrap_err().starts_with("limit: "));
    }

    #[test]
    fn a_command_and_steps_become_submit_flags() {
        let s: SubmitJob = parse(args(serde_json::json!({
            "command": "echo hi",
            "steps": [{"name": "a", "run": "true"}, {"name": "b", "run": "true", "needs": ["a"]}],
            "timeout": "1m",
            "retries": 2
        })))
        .unwrap();
        let a = s.into_submit_args().unwrap();
        let steps: Vec<&str> = a.steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(steps, ["a", "b", ARGV_STEP]);
        assert_eq!(a.steps[2].1, "echo hi");
        assert_eq!(a.needs, [("b".to_string(), "a".to_string())]);
        assert_eq!(a.timeout, Some(Duration::from_secs(60)));
        assert_eq!(a.retries, Some(2));
    }
}
