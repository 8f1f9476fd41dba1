//! The tools `rota mcp` offers, each a thin call of what the matching CLI command does
//! (`job submit`, `run`, `job list|show|logs|cancel|retry`, `worker list`, `worker heal
//! --fleet`, `apply`, `get`). Results are the API's JSON; every failure, a bad input or a
//! refusal, is a tool result with `isError` whose text names what was wrong.

use super::inputs::{self, schema};
use super::inputs::{
    ApplyResources, GetResources, HealWorkers, JobLogs, JobRef, ListJobs, RunWorkflow, SubmitJob,
};
use super::{logs, progress};
use crate::commands::fleet::list as fleet_list;
use crate::commands::job::{Api, list, submit};
use crate::commands::resources;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use rmcp::{Peer, RoleServer, tool, tool_handler, tool_router};
use rota_api_types::jobs::ListJobsQuery;
use rota_api_types::resources::RunRequest;
use rota_api_types::supervisors::SupervisorState;
use rota_api_types::workers::WorkerState;
use rota_domain::resource::Kind;
use serde::Serialize;
use std::sync::Arc;

/// The MCP server: the operator client, shared by every call.
#[derive(Clone)]
pub(crate) struct Rota {
    api: Arc<Api>,
}

impl Rota {
    pub(crate) fn new(api: Api) -> Self {
        Self { api: Arc::new(api) }
    }
}

/// A successful result: `value` as pretty JSON text.
fn ok<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_string_pretty(value) {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(e) => failed(format!("cannot encode the result: {e}")),
    }
}

/// A failed call: `isError` with the message.
pub(super) fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// An error of the CLI's own functions, with its causes.
fn failure(e: anyhow::Error) -> CallToolResult {
    failed(format!("{e:#}"))
}

/// Runs `body` with the parsed input, or answers the parse error.
macro_rules! with_input {
    ($args:expr, $ty:ty, |$input:ident| $body:expr) => {
        match inputs::parse::<$ty>($args) {
            Ok($input) => $body,
            Err(e) => failed(e),
        }
    };
}

#[tool_router]
impl Rota {
    #[tool(
        description = "Submit a job: a shell command (step `main`) and/or steps, with optional name, queue, \
                       timeout per attempt, retries and idempotency key. Returns the job's id.",
        input_schema = schema::<SubmitJob>()
    )]
    async fn submit_job(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, SubmitJob, |input| {
            let args = match input.into_submit_args() {
                Ok(a) => a,
                Err(e) => return failed(e),
            };
            submit::send(&self.api, &args).await.map_or_else(failure, |r| ok(&r))
        })
    }

    #[tool(
        description = "Start a declared workflow as a job, with its inputs. Returns the job's id.",
        input_schema = schema::<RunWorkflow>()
    )]
    async fn run_workflow(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, RunWorkflow, |input| {
            let req = RunRequest { inputs: input.inputs, on: input.on };
            resources::start_run(&self.api, &input.workflow, &req, input.idempotency_key.as_deref(), "inputs")
                .await
                .map_or_else(failure, |r| ok(&r))
        })
    }

    #[tool(
        description = "List jobs, newest first, optionally by state and queue.",
        input_schema = schema::<ListJobs>()
    )]
    async fn list_jobs(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, ListJobs, |input| {
            let limit = match input.limit() {
                Ok(l) => l,
                Err(e) => return failed(e),
            };
            let state = match input.state.as_deref().map(|s| list::check_states("state", s)).transpose() {
                Ok(s) => s,
                Err(e) => return failure(e),
            };
            let query =
                ListJobsQuery { state, queue: input.queue, limit: Some(limit), ..ListJobsQuery::default() };
            let api = &self.api;
            api.client.list_jobs(&query).await.map_or_else(|e| failure(api.error(e, None)), |r| ok(&r))
        })
    }

    #[tool(
        description = "Show a job: its state and reason, and every step with its attempts (worker, exit code, reason).",
        input_schema = schema::<JobRef>()
    )]
    async fn show_job(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, JobRef, |input| match inputs::job_id("id", &input.id) {
            Ok(id) => {
                let api = &self.api;
                api.client.get_job(id).await.map_or_else(|e| failure(api.error(e, Some(id))), |r| ok(&r))
            }
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "The end of a job's output (of one step, or of every step), as text, with a line \
                       naming the step and attempt before each stretch.",
        input_schema = schema::<JobLogs>()
    )]
    async fn job_logs(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, JobLogs, |input| logs::tail(&self.api, &input).await)
    }

    #[tool(
        description = "Cancel a job: running steps are stopped, nothing more starts.",
        input_schema = schema::<JobRef>()
    )]
    async fn cancel_job(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, JobRef, |input| match inputs::job_id("id", &input.id) {
            Ok(id) => {
                let api = &self.api;
                api.client.cancel_job(id).await.map_or_else(|e| failure(api.error(e, Some(id))), |r| ok(&r))
            }
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "Retry a finished job: its failed, cancelled and skipped steps run again.",
        input_schema = schema::<JobRef>()
    )]
    async fn retry_job(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, JobRef, |input| match inputs::job_id("id", &input.id) {
            Ok(id) => {
                let api = &self.api;
                api.client.retry_job(id).await.map_or_else(|e| failure(api.error(e, Some(id))), |r| ok(&r))
            }
            Err(e) => failed(e),
        })
    }

    #[tool(
        description = "The fleet: workers (state, heartbeat, concurrency, running steps, queues) and the \
                       supervisors of background workers (state, restarts, last error)."
    )]
    async fn list_workers(&self) -> CallToolResult {
        fleet_list::fetch(&self.api).await.map_or_else(failure, |r| ok(&r))
    }

    #[tool(
        description = "Only the unhealthy part of the fleet: stale workers (no heartbeat for a lease), and \
                       supervisors that are failed, restarting or have stopped reporting. `heal_workers` \
                       heals the failed ones."
    )]
    async fn unhealthy_workers(&self) -> CallToolResult {
        match fleet_list::fetch(&self.api).await {
            Ok(mut listing) => {
                listing.workers.retain(|w| w.state == WorkerState::Stale);
                listing.supervisors.retain(|s| {
                    s.stale || matches!(s.report.state, SupervisorState::Failed | SupervisorState::Restarting)
                });
                ok(&listing)
            }
            Err(e) => failure(e),
        }
    }

    #[tool(
        description = "Heal the fleet's failed background workers through their supervisors, on whichever \
                       host (as `rota worker heal --fleet`); `dry_run` only says which. Sends progress \
                       notifications when the request carries a progressToken. Returns the heal's events.",
        input_schema = schema::<HealWorkers>()
    )]
    async fn heal_workers(
        &self,
        args: JsonObject,
        peer: Peer<RoleServer>,
        meta: rmcp::model::RequestMetaObject,
    ) -> CallToolResult {
        with_input!(args, HealWorkers, |input| {
            let wait = match input.wait_timeout() {
                Ok(w) => w,
                Err(e) => return failed(e),
            };
            let progress = meta.get_progress_token().map(|token| progress::Progress::new(peer, token));
            progress::heal(&self.api, input.dry_run, wait, progress).await
        })
    }

    #[tool(
        description = "Create or update declared resources (workflows, schedules, worker pools, worker \
                       configs, secrets) from YAML or JSON text, all or nothing, as `rota apply -f -`. \
                       Returns created, configured or unchanged per resource.",
        input_schema = schema::<ApplyResources>()
    )]
    async fn apply_resources(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, ApplyResources, |input| {
            let manifests = match rota_manifest::manifests::from_text("documents", &input.documents) {
                Ok(m) => m,
                Err(e) => return failure(e.into()),
            };
            resources::send(&self.api, &manifests, input.dry_run).await.map_or_else(failure, |r| ok(&r))
        })
    }

    #[tool(
        description = "Declared resources of a kind (workflow, schedule, workerpool, workerconfig, secret), \
                       or one by name, with their status. Secret values are never shown.",
        input_schema = schema::<GetResources>()
    )]
    async fn get_resources(&self, args: JsonObject) -> CallToolResult {
        with_input!(args, GetResources, |input| {
            let kind = match Kind::parse(&input.kind) {
                Ok(k) => k,
                Err(e) => return failed(format!("kind: {e}")),
            };
            let api = &self.api;
            match &input.name {
                Some(name) => api
                    .client
                    .get_resource(kind.plural(), name)
                    .await
                    .map_or_else(|e| failure(resources::not_found(api, e, kind, name)), |r| ok(&r)),
                None => api
                    .client
                    .list_resources(kind.plural())
                    .await
                    .map_or_else(|e| failure(api.error(e, None)), |r| ok(&r)),
            }
        })
    }
}

#[tool_handler(
    name = "rota",
    instructions = "Operate a rota fleet (jobs, workflows, workers, declared resources) with the admin \
                    token of the `rota` command line that started this server."
)]
impl rmcp::ServerHandler for Rota {}
