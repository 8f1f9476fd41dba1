//! Operator job calls: submit (single, batch), list, show, logs, cancel, retry.

use crate::Bytes64;
use crate::worker::Stream;
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, AttemptStatus, JobId, JobSpec, StepState};
use serde::{Deserialize, Serialize};

/// Reply to `POST /api/v1/jobs` (201 when created, 200 when the idempotency key matched
/// an existing job).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResponse {
    /// The job's id.
    pub id: JobId,
    /// False when an existing job with the same idempotency key was returned.
    pub created: bool,
}

/// `POST /api/v1/jobs/batch`: many jobs, committed together (each accepted or refused on
/// its own).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchSubmitRequest {
    /// The job documents.
    pub jobs: Vec<JobSpec>,
}

/// Reply to a batch submit: one entry per job, in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSubmitResponse {
    /// Per-job results (`status` 201, 200 or 400).
    pub results: Vec<crate::worker::ItemResult<SubmitResponse>>,
}

/// Query of `GET /api/v1/jobs`. Newest first; default limit 50, at most 1000.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Only jobs in this state (`unschedulable` selects queued jobs no worker can take);
    /// comma-separated for several.
    #[serde(default)]
    pub state: Option<String>,
    /// Only jobs of this queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// Only jobs whose name contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only the runs of this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Only jobs submitted before this one (the next page: pass the last id of a page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = Uuid)]
    pub before: Option<rota_domain::JobId>,
    /// At most this many (default 50, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Step counts of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepCounts {
    /// All steps.
    pub total: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Running now.
    pub running: u32,
    /// Failed, cancelled, revoked or skipped.
    pub failed: u32,
}

/// A job in listings.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// Id.
    pub id: JobId,
    /// Its namespace.
    #[serde(default = "rota_domain::namespace::default_owned")]
    pub namespace: String,
    /// Optional name.
    pub name: Option<String>,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// `queued`, `unschedulable`, `running`, `succeeded`, `failed`, `cancelled`, `revoked`.
    pub state: String,
    /// Why it is in that state (terminal states always have one).
    pub reason: Option<String>,
    /// Step counts.
    pub steps: StepCounts,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<JobSummary>,
}

/// `GET /api/v1/jobs/{id}`: a job with its steps and attempts.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The submitted document.
    pub spec: JobSpec,
    /// Steps in document order.
    pub step_details: Vec<StepView>,
}

/// A step with its attempts.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// Name.
    pub name: String,
    /// State.
    pub state: StepState,
    /// Why (failed/skipped/cancelled, or the last retry's cause).
    pub reason: Option<String>,
    /// Not claimable before this time (retry backoff).
    pub run_after: Option<DateTime<Utc>>,
    /// Attempts, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One attempt of a step.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// Fencing id.
    pub attempt_id: AttemptId,
    /// 1-based number.
    pub number: u32,
    /// Worker name that held it.
    pub worker: String,
    /// Status.
    pub status: AttemptStatus,
    /// Exit code if it exited.
    pub exit_code: Option<i32>,
    /// Why it ended.
    pub reason: Option<String>,
    /// Pid of the step's shell, if reported.
    pub pid: Option<u32>,
    /// Claimed at.
    pub started_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// What a succeeded attempt wrote to `$ROTA_OUTPUT` (`KEY=value`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,
}

/// Query of `GET /api/v1/jobs/{id}/logs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this step.
    #[serde(default)]
    pub step: Option<String>,
    /// Return chunks after this cursor (0 = from the start).
    #[serde(default)]
    pub after: Option<i64>,
    /// If nothing new, wait up to this long for output (follow mode, capped at 30 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// At most this many bytes of data per page (default 4 MiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Without `after`: start so that about the last this many bytes come (the output's
    /// tail, whole chunks, at least one); its `nextCursor` follows on from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_bytes: Option<u64>,
}

/// A page of log output.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    /// Chunks in the order they were stored.
    pub chunks: Vec<LogRecord>,
    /// Pass as `after` for the next page.
    pub next_cursor: i64,
    /// True when the job has ended and every chunk has been returned.
    pub done: bool,
    /// Attempts whose output was not all kept: cut by the log cap, or by the total log
    /// quota (deleted after the job finished, or refused when the quota was full).
    pub truncated: Vec<Truncation>,
}

/// One stored chunk.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// Position in the job's log.
    pub cursor: i64,
    /// Step name.
    pub step: String,
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Attempt number.
    pub attempt: u32,
    /// Stream.
    pub stream: Stream,
    /// Bytes.
    pub data: Bytes64,
}

/// What was not kept of one attempt's output.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Truncation {
    /// Step name.
    pub step: String,
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Bytes dropped from the head of the output by the step's log cap (on the server, and
    /// on the worker before sending).
    pub cut_bytes: u64,
    /// Bytes deleted after the job finished, to keep the server's total log quota.
    #[serde(default)]
    pub quota_pruned_bytes: u64,
    /// New output not stored because the server's total log quota was full.
    #[serde(default)]
    pub quota_refused_bytes: u64,
}

/// Use of the server's total log quota (live log bytes, not file size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogQuotaUse {
    /// Log bytes stored now.
    pub live_bytes: u64,
    /// The quota; absent when none is enforced.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Bytes of finished jobs' logs deleted to keep the quota, since the server started.
    pub pruned_bytes: u64,
    /// Bytes of new output refused because the quota was full, since the server started.
    pub refused_bytes: u64,
}
