//! Operator job calls: submit (single, batch), list, show, logs (with follow), cancel,
//! retry. Input is validated here against the domain rules; state changes are store calls.

use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::namespace::Scope;
use crate::state::AppState;
use crate::views::{self, Fleet};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rota_api_types::jobs::{
    BatchSubmitRequest, BatchSubmitResponse, JobDetail, JobList, JobSummary, ListJobsQuery, LogPage,
    LogRecord, LogsQuery, SubmitResponse, Truncation,
};
use rota_api_types::worker::{Command, ItemResult, StopOrder, StopReason};
use rota_api_types::{Bytes64, IDEMPOTENCY_KEY_HEADER};
use rota_domain::{JobId, JobSpec, JobState, limits};
use rota_store::bus::Event;
use rota_store::{JobFilter, NewJob, StopKind};
use std::time::Duration;

/// Longest a log follower waits without looking at the store.
const FOLLOW_RECHECK: Duration = Duration::from_secs(1);

const DEFAULT_LIST_LIMIT: u32 = 50;
const MAX_LIST_LIMIT: u32 = 1000;
const DEFAULT_LOG_PAGE: u64 = 4 << 20;

async fn fleet(state: &AppState) -> Result<Fleet, ApiError> {
    Ok(Fleet::new(state.store.list_workers().await?, state.config.lease_ttl))
}

/// The job, if it is in the call's namespace: a job of another namespace is not found.
async fn job_in(state: &AppState, scope: &Scope, id: JobId) -> Result<rota_store::JobRecord, ApiError> {
    let rec = state.store.get_job(id).await?;
    if !scope.sees(&rec.row.namespace) {
        return Err(ApiError::not_found(format!(
            "no job {id} in namespace '{}' (it is in another namespace: --namespace)",
            scope.namespace
        )));
    }
    Ok(rec)
}

/// The job as it will be stored: in the call's namespace (a document naming another
/// namespace than the call is refused), with the header's idempotency key.
/// `Ok(Err)` is a 400 naming the field (secret references are checked in the job's
/// namespace).
async fn prepare(
    state: &AppState,
    mut spec: JobSpec,
    scope: &Scope,
    header_key: Option<String>,
) -> Result<Result<NewJob, String>, ApiError> {
    if rota_domain::namespace::is_default(&spec.namespace) {
        spec.namespace = scope.namespace.clone();
    } else if spec.namespace != scope.namespace && !rota_domain::namespace::is_default(&scope.namespace) {
        return Ok(Err(format!(
            "namespace: the document says '{}' but the call is in namespace '{}'",
            spec.namespace, scope.namespace
        )));
    }
    if let Some(k) = header_key {
        spec.idempotency_key = Some(k);
    }
    if let Err(e) = spec.validate() {
        return Ok(Err(e.to_string()));
    }
    if let Some(refused) = super::secrets::refused_job(state, &spec).await? {
        return Ok(Err(refused));
    }
    Ok(Ok(NewJob { id: JobId::new(), spec, now: chrono::Utc::now() }))
}

/// Submits one job. 201 when created; 200 with the existing id when the idempotency key
/// (header or document) is already known. The reply is sent only after the job is on disk.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("admin" = [])), request_body = JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "Submitting twice with one key yields one job"),
        rota_api_types::namespace::NamespaceQuery),
    responses((status = 201, body = SubmitResponse), (status = 200, body = SubmitResponse),
        (status = 400, body = rota_api_types::ErrorBody), (status = 401), (status = 403), (status = 413), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn submit_job(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(v) => Some(
            v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key header is not text"))?.to_string(),
        ),
        None => None,
    };
    let job = prepare(&state, spec, &scope, key).await?.map_err(ApiError::bad_request)?;
    let mut results = crate::handoff::submit_jobs(&state, vec![job]).await?;
    let submitted = results.pop().ok_or_else(|| ApiError::internal("store returned no result"))??;
    if submitted.created {
        state.metrics.jobs_submitted(1);
        state.publish(vec![
            Event::Claimable,
            Event::Job {
                job: submitted.id,
                state: Some(JobState::Queued),
                namespace: Some(scope.namespace.clone()),
            },
        ]);
    }
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(SubmitResponse { id: submitted.id, created: submitted.created })))
}

/// Submits many jobs in one durable commit; each is accepted or refused on its own.
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", security(("admin" = [])), request_body = BatchSubmitRequest,
    params(rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = BatchSubmitResponse), (status = 400), (status = 401), (status = 403), (status = 413), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn submit_batch(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<BatchSubmitRequest>,
) -> Result<Json<BatchSubmitResponse>, ApiError> {
    limits::check_count("jobs", req.jobs.len(), limits::MAX_BATCH_JOBS).map_err(ApiError::limit)?;
    let mut slots: Vec<Option<ItemResult<SubmitResponse>>> = Vec::with_capacity(req.jobs.len());
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (i, spec) in req.jobs.into_iter().enumerate() {
        match prepare(&state, spec, &scope, None).await? {
            Ok(job) => {
                positions.push(i);
                valid.push(job);
                slots.push(None);
            }
            Err(e) => slots.push(Some(ItemResult {
                status: 400,
                result: None,
                error: Some(format!("jobs[{i}].{e}")),
            })),
        }
    }
    let results =
        if valid.is_empty() { Vec::new() } else { crate::handoff::submit_jobs(&state, valid).await? };
    let mut created = 0;
    let mut events = vec![Event::Claimable];
    for (pos, r) in positions.into_iter().zip(results) {
        slots[pos] = Some(match r {
            Ok(s) => {
                created += u64::from(s.created);
                if s.created {
                    events.push(Event::Job {
                        job: s.id,
                        state: Some(JobState::Queued),
                        namespace: Some(scope.namespace.clone()),
                    });
                }
                ItemResult {
                    status: if s.created { 201 } else { 200 },
                    result: Some(SubmitResponse { id: s.id, created: s.created }),
                    error: None,
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                ItemResult { status: e.status.as_u16(), result: None, error: Some(e.message) }
            }
        });
    }
    if created > 0 {
        state.metrics.jobs_submitted(created);
        state.publish(events);
    }
    let results = slots
        .into_iter()
        .map(|s| s.unwrap_or(ItemResult { status: 500, result: None, error: Some("internal error".into()) }))
        .collect();
    Ok(Json(BatchSubmitResponse { results }))
}

/// Lists jobs, newest first (default 50, at most 1000).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("admin" = [])),
    params(ListJobsQuery, rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = JobList), (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn list_jobs(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    if let Some(st) = &q.state
        && st.len() > limits::MAX_QUERY_TEXT
    {
        return Err(ApiError::bad_request(format!(
            "state: is {} bytes; the limit is {}",
            st.len(),
            limits::MAX_QUERY_TEXT
        )));
    }
    if let Some(queue) = &q.queue {
        limits::check_name("queue", queue).map_err(ApiError::limit)?;
    }
    if let Some(name) = &q.name {
        limits::check_text("name", name, limits::MAX_NAME).map_err(ApiError::limit)?;
    }
    if let Some(schedule) = &q.schedule {
        limits::check_name("schedule", schedule).map_err(ApiError::limit)?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
    }
    let mut states = Vec::new();
    let mut only_unschedulable = false;
    let mut only_schedulable_queued = false;
    if let Some(raw) = &q.state {
        for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if s == "unschedulable" {
                only_unschedulable = true;
                states.push(JobState::Queued);
            } else {
                let st: JobState = s
                    .parse()
                    .map_err(|e: String| ApiError::bad_request(format!("state: {e}, unschedulable")))?;
                if st == JobState::Queued {
                    only_schedulable_queued = true;
                }
                states.push(st);
            }
        }
    }
    let fleet = fleet(&state).await?;
    // Unschedulable is derived, so over-fetch when filtering on it.
    let fetch = if only_unschedulable != only_schedulable_queued { MAX_LIST_LIMIT } else { limit };
    let rows = state
        .store
        .list_jobs(&JobFilter {
            namespace: scope.filter().map(str::to_string),
            states,
            queue: q.queue.clone(),
            name: q.name.clone().filter(|n| !n.is_empty()),
            schedule: q.schedule.clone(),
            before: q.before,
            limit: fetch,
        })
        .await?;
    let jobs = rows
        .iter()
        .map(|r| views::summary(r, &fleet))
        .filter(|s| match (only_unschedulable, only_schedulable_queued) {
            (true, false) => s.state != "queued",
            (false, true) => s.state != "unschedulable",
            _ => true,
        })
        .take(limit as usize)
        .collect();
    Ok(Json(JobList { jobs }))
}

/// One job with its steps and attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("admin" = [])),
    params(("id" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = JobDetail), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn get_job(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobDetail>, ApiError> {
    let rec = job_in(&state, &scope, id).await?;
    let fleet = fleet(&state).await?;
    Ok(Json(views::detail(&rec, &fleet)))
}

/// A page of the job's output after `after`; with `waitMs`, waits for new output (follow).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", security(("admin" = [])),
    params(("id" = String, Path), LogsQuery, rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = LogPage), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn job_logs(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<LogPage>, ApiError> {
    job_in(&state, &scope, id).await?;
    if let Some(step) = &q.step {
        limits::check_name("step", step).map_err(ApiError::limit)?;
    }
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::bad_request("after: must be 0 or a cursor from an earlier page"));
    }
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(state.config.max_poll);
    let deadline = tokio::time::Instant::now() + wait;
    let after = match (q.after, q.tail_bytes) {
        (Some(after), _) => after,
        (None, Some(tail)) => state.store.log_tail_cursor(id, q.step.as_deref(), tail).await?,
        (None, None) => 0,
    };
    let query = rota_store::LogQuery {
        job_id: id,
        step: q.step.clone(),
        after,
        max_bytes: q.max_bytes.unwrap_or(DEFAULT_LOG_PAGE).clamp(1, 32 << 20),
    };
    let mut progress = state.progress.subscribe();
    loop {
        progress.borrow_and_update();
        // Read the job first: if it had ended before the page was read, an empty page
        // really is the end.
        let job = state.store.get_job(id).await?;
        let ended = job.row.state.is_terminal() && job.row.counts.running == 0;
        let page = state.store.read_logs(&query).await?;
        let waiting = page.chunks.is_empty() && !ended && tokio::time::Instant::now() < deadline;
        if !waiting {
            let done = ended && page.chunks.is_empty();
            return Ok(Json(to_page(page, &job, done)));
        }
        // The bus wakes us when output or the job changes; looking again every
        // FOLLOW_RECHECK anyway means a lost message costs latency, not the follow.
        tokio::select! {
            _ = progress.changed() => {}
            _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + FOLLOW_RECHECK)) => {}
            _ = state.shutdown.cancelled() => {}
        }
        if state.shutdown.is_cancelled() {
            let page = state.store.read_logs(&query).await?;
            return Ok(Json(to_page(page, &job, false)));
        }
    }
}

fn to_page(page: rota_store::LogPage, _job: &rota_store::JobRecord, done: bool) -> LogPage {
    LogPage {
        chunks: page
            .chunks
            .into_iter()
            .map(|c| LogRecord {
                cursor: c.cursor,
                step: c.step,
                attempt_id: c.attempt_id,
                attempt: c.attempt,
                stream: c.stream,
                data: Bytes64(c.data),
            })
            .collect(),
        next_cursor: page.next_cursor,
        done,
        truncated: page
            .truncated
            .into_iter()
            .map(|c| Truncation {
                step: c.step,
                attempt_id: c.attempt_id,
                cut_bytes: c.cap_bytes,
                quota_pruned_bytes: c.quota_pruned_bytes,
                quota_refused_bytes: c.quota_refused_bytes,
            })
            .collect(),
    }
}

/// Cancels a job: steps not started end at once, running steps' process groups are told to
/// stop (TERM, grace, KILL). The job ends `cancelled`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("admin" = [])),
    params(("id" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = JobSummary), (status = 400), (status = 401), (status = 403), (status = 404), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn cancel_job(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobSummary>, ApiError> {
    job_in(&state, &scope, id).await?;
    let out = state.store.stop_job(id, StopKind::Cancel, state.store.now()).await?;
    let mut stops = Vec::with_capacity(out.running.len());
    for r in &out.running {
        tracing::info!(job_id = %r.job_id, step = %r.step, attempt_id = %r.attempt_id, "cancel: stopping attempt");
        stops.push((
            r.session,
            Command::Stop(StopOrder {
                attempt_id: r.attempt_id,
                reason: StopReason::Cancelled,
                signal: None,
            }),
        ));
    }
    if !stops.is_empty() {
        state.hub.push_all(stops, state.config.lease_ttl);
    }
    state.publish(vec![Event::Job {
        job: id,
        state: Some(out.row.state),
        namespace: Some(scope.namespace.clone()),
    }]);
    let fleet = fleet(&state).await?;
    Ok(Json(views::summary(&out.row, &fleet)))
}

/// Queues a failed, cancelled or revoked job again (succeeded steps are kept).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", security(("admin" = [])),
    params(("id" = String, Path), rota_api_types::namespace::NamespaceQuery),
    responses((status = 200, body = JobSummary), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409), (status = 507, description = "storage_full: no space left on the device holding the database (the message names it)")))]
pub(crate) async fn retry_job(
    _: Admin,
    scope: Scope,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobSummary>, ApiError> {
    job_in(&state, &scope, id).await?;
    let row = state.store.retry_job(id, state.store.now()).await?;
    state.publish(vec![
        Event::Claimable,
        Event::Job { job: id, state: Some(row.state), namespace: Some(scope.namespace.clone()) },
    ]);
    let fleet = fleet(&state).await?;
    Ok(Json(views::summary(&row, &fleet)))
}
