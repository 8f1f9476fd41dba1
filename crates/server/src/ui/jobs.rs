//! The jobs page (newest first, filters, search, pages that stay put while jobs arrive) and
//! the job page (the step DAG, each step's attempts, the selected step's output tail kept
//! live, and Cancel, Retry and Revoke).

use super::graph::{Node, dag};
use super::{Chrome, LOG_TAIL_BYTES, MAX_PAGE_ROWS, UiError, UiRequest, age, html, urlencode, when};
use crate::auth::Admin;
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::state::AppState;
use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use rota_api_types::jobs::{JobDetail, JobSummary, ListJobsQuery, LogsQuery};
use rota_domain::JobId;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub(crate) struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    schedule: String,
    /// Search: a job id opens that job; other text matches names.
    #[serde(default)]
    q: String,
    before: Option<JobId>,
}

pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) state: String,
    pub(crate) steps: String,
    pub(crate) submitted: String,
    pub(crate) took: String,
}

fn row(j: &JobSummary) -> JobRow {
    JobRow {
        id: j.id.to_string(),
        namespace: j.namespace.clone(),
        name: j.name.clone().unwrap_or_default(),
        queue: j.queue.clone(),
        state: j.state.clone(),
        steps: format!("{}/{}", j.steps.succeeded, j.steps.total),
        submitted: format!("{} ago", age(j.created_at)),
        took: j
            .finished_at
            .map(|f| format!("{:.1}s", (f - j.created_at).num_milliseconds().max(0) as f64 / 1000.0))
            .unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "ui/jobs_live.html")]
struct JobsLive {
    all: bool,
    nsq: String,
    rows: Vec<JobRow>,
    /// The filters' query (without `before`), for the next page's link.
    filters: String,
    next: Option<String>,
    paged: bool,
}

#[derive(Template)]
#[template(path = "ui/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    state_options: Vec<(&'static str, bool)>,
    f_state: String,
    f_queue: String,
    f_schedule: String,
    f_q: String,
    live_url: String,
    /// Only the first page follows new jobs; an older page stays as it is.
    follow: bool,
    live: String,
}

const STATES: &[&str] =
    &["queued", "unschedulable", "running", "succeeded", "failed", "cancelled", "revoked"];

/// `GET /ui/jobs`.
pub(crate) async fn list(
    req: UiRequest,
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> Result<Response, UiError> {
    let search = q.q.trim();
    if let Ok(id) = search.parse::<uuid::Uuid>() {
        return Ok(Redirect::to(&format!("/ui/jobs/{id}?ns={}", urlencode(&req.ns))).into_response());
    }
    if !q.state.is_empty() && !STATES.contains(&q.state.as_str()) {
        return Err(ApiError::bad_request(format!(
            "state: '{}' is not one of {}",
            q.state,
            STATES.join(", ")
        ))
        .into());
    }
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let query = ListJobsQuery {
        state: nonempty(&q.state),
        queue: nonempty(&q.queue),
        name: nonempty(search),
        schedule: nonempty(&q.schedule),
        before: q.before,
        limit: Some(MAX_PAGE_ROWS as u32),
    };
    let axum::Json(list) =
        crate::routes::jobs::list_jobs(Admin, req.scope.clone(), State(state.clone()), ApiQuery(query))
            .await?;
    let nsq = format!("ns={}", urlencode(&req.ns));
    let filters = format!(
        "{nsq}&state={}&queue={}&schedule={}&q={}",
        urlencode(&q.state),
        urlencode(&q.queue),
        urlencode(&q.schedule),
        urlencode(search)
    );
    let next =
        (list.jobs.len() == MAX_PAGE_ROWS).then(|| list.jobs.last().map(|j| j.id.to_string())).flatten();
    let live = JobsLive {
        all: req.scope.all,
        nsq: nsq.clone(),
        rows: list.jobs.iter().map(row).collect(),
        filters: filters.clone(),
        next,
        paged: q.before.is_some(),
    };
    if req.fragment {
        return html(&live);
    }
    let chrome = req.chrome(&state, "Jobs", "jobs", "&kind=job,resync").await;
    let before = q.before.map(|b| format!("&before={b}")).unwrap_or_default();
    html(&JobsPage {
        chrome,
        state_options: STATES.iter().map(|s| (*s, *s == q.state)).collect(),
        f_state: q.state.clone(),
        f_queue: q.queue.clone(),
        f_schedule: q.schedule.clone(),
        f_q: search.to_string(),
        live_url: format!("/ui/jobs?{filters}{before}"),
        follow: q.before.is_none(),
        live: live.render()?,
    })
}

pub(crate) struct AttemptRow {
    pub(crate) number: u32,
    pub(crate) worker: String,
    pub(crate) status: String,
    pub(crate) exit: String,
    pub(crate) duration: String,
    pub(crate) reason: String,
}

pub(crate) struct StepRow {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) reason: String,
    /// Its newest attempts ([`ATTEMPTS_SHOWN`], more for the selected step).
    pub(crate) attempts: Vec<AttemptRow>,
    /// Older attempts not shown.
    pub(crate) earlier: usize,
    pub(crate) selected: bool,
}

/// Steps a job page lists at a time (a job may have 1000): with their newest attempts, the
/// table stays within [`MAX_PAGE_ROWS`] rows.
const STEPS_SHOWN: usize = 19;
/// Newest attempts shown per step, and for the selected step.
const ATTEMPTS_SHOWN: usize = 2;
const SELECTED_ATTEMPTS_SHOWN: usize = 10;
/// Jobs with more steps get no graph (it would not be readable, nor small).
const MAX_DRAWN_STEPS: usize = 100;

#[derive(Template)]
#[template(path = "ui/job_live.html")]
struct JobLive {
    id: String,
    nsq: String,
    name: String,
    queue: String,
    state: String,
    reason: String,
    submitted: String,
    finished: String,
    ended: bool,
    dag: String,
    total_steps: usize,
    steps: Vec<StepRow>,
    /// Step pages (from 0) and the query keeping the selected step.
    spage: usize,
    spages: usize,
    step_q: String,
}

#[derive(Template)]
#[template(path = "ui/job.html")]
struct JobPage {
    chrome: Chrome,
    live_url: String,
    logs_url: String,
    live: String,
    logs: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct StepQuery {
    step: Option<String>,
    /// The page of the steps table.
    #[serde(default)]
    spage: usize,
}

/// The job (as the API shows it, in the request's namespace) and the step its page shows
/// ([`selected`]).
async fn detail(
    req: &UiRequest,
    state: &AppState,
    id: JobId,
    asked: Option<&str>,
) -> Result<(JobDetail, Option<String>), UiError> {
    let axum::Json(d) =
        crate::routes::jobs::get_job(Admin, req.scope.clone(), State(state.clone()), ApiPath(id)).await?;
    let step = selected(&d, asked);
    Ok((d, step))
}

/// The step a job page shows the output of: the one asked for, else the first running,
/// else the last that ran, else the first.
fn selected(d: &JobDetail, asked: Option<&str>) -> Option<String> {
    if let Some(s) = asked.filter(|s| d.step_details.iter().any(|x| x.name == *s)) {
        return Some(s.to_string());
    }
    let running = d.step_details.iter().find(|s| s.attempts.iter().any(|a| a.finished_at.is_none()));
    let ran = d
        .step_details
        .iter()
        .filter(|s| !s.attempts.is_empty())
        .max_by_key(|s| s.attempts.last().map(|a| a.started_at));
    running.or(ran).or(d.step_details.first()).map(|s| s.name.clone())
}

fn job_live(d: &JobDetail, nsq: &str, step: Option<&str>, spage: usize) -> JobLive {
    let states: Vec<String> = d.step_details.iter().map(|s| s.state.as_str().to_string()).collect();
    let nodes: Vec<Node<'_>> = d
        .spec
        .steps
        .iter()
        .map(|s| Node {
            name: &s.name,
            state: d
                .step_details
                .iter()
                .position(|x| x.name == s.name)
                .map_or("waiting", |i| states[i].as_str()),
            needs: &s.needs,
        })
        .collect();
    let s = &d.summary;
    let spages = d.step_details.len().div_ceil(STEPS_SHOWN).max(1);
    // The page holding the selected step unless another was asked for.
    let spage = if spage > 0 {
        spage.min(spages - 1)
    } else {
        step.and_then(|n| d.step_details.iter().position(|s| s.name == n)).map_or(0, |i| i / STEPS_SHOWN)
    };
    JobLive {
        id: s.id.to_string(),
        nsq: nsq.to_string(),
        name: s.name.clone().unwrap_or_default(),
        queue: s.queue.clone(),
        state: s.state.clone(),
        reason: s.reason.clone().unwrap_or_default(),
        submitted: when(s.created_at),
        finished: s.finished_at.map(when).unwrap_or_default(),
        ended: s.finished_at.is_some(),
        dag: if nodes.len() <= MAX_DRAWN_STEPS { dag(&nodes) } else { String::new() },
        total_steps: d.step_details.len(),
        spages,
        spage,
        step_q: step.map(|s| format!("&step={}", urlencode(s))).unwrap_or_default(),
        steps: d
            .step_details
            .iter()
            .skip(spage * STEPS_SHOWN)
            .take(STEPS_SHOWN)
            .map(|st| {
                let selected = step == Some(st.name.as_str());
                let shown = if selected { SELECTED_ATTEMPTS_SHOWN } else { ATTEMPTS_SHOWN };
                let earlier = st.attempts.len().saturating_sub(shown);
                StepRow {
                    name: st.name.clone(),
                    state: st.state.as_str().to_string(),
                    reason: st.reason.clone().unwrap_or_default(),
                    selected,
                    earlier,
                    attempts: st
                        .attempts
                        .iter()
                        .skip(earlier)
                        .map(|a| AttemptRow {
                            number: a.number,
                            worker: a.worker.clone(),
                            status: a.status.as_str().to_string(),
                            exit: a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                            duration: a
                                .finished_at
                                .map(|f| {
                                    format!(
                                        "{:.2}s",
                                        (f - a.started_at).num_milliseconds().max(0) as f64 / 1000.0
                                    )
                                })
                                .unwrap_or_else(|| format!("{} so far", age(a.started_at))),
                            reason: a.reason.clone().unwrap_or_default(),
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// `GET /ui/jobs/{id}`.
pub(crate) async fn show(
    req: UiRequest,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
    Query(q): Query<StepQuery>,
) -> Result<Response, UiError> {
    let (d, step) = detail(&req, &state, id, q.step.as_deref()).await?;
    let nsq = format!("ns={}", urlencode(&req.ns));
    let live = job_live(&d, &nsq, step.as_deref(), q.spage);
    if req.fragment {
        return html(&live);
    }
    let step_q = step.as_deref().map(|s| format!("&step={}", urlencode(s))).unwrap_or_default();
    let logs = logs_fragment(&req, &state, id, step.as_deref()).await?;
    let chrome = req.chrome(&state, format!("Job {id}"), "jobs", &format!("&job={id}")).await;
    html(&JobPage {
        chrome,
        live_url: format!("/ui/jobs/{id}?{nsq}{step_q}&spage={}", q.spage),
        logs_url: format!("/ui/jobs/{id}/logs?{nsq}{step_q}"),
        live: live.render()?,
        logs: logs.render()?,
    })
}

#[derive(Template)]
#[template(path = "ui/logs.html")]
struct LogsFragment {
    step: String,
    text: String,
    cut: bool,
    download: String,
    empty: bool,
}

async fn logs_fragment(
    req: &UiRequest,
    state: &AppState,
    id: JobId,
    step: Option<&str>,
) -> Result<LogsFragment, UiError> {
    let Some(step) = step else {
        return Ok(LogsFragment {
            step: String::new(),
            text: String::new(),
            cut: false,
            download: String::new(),
            empty: true,
        });
    };
    // Where the tail starts (the job was checked to be in this scope by the caller).
    let from = state.store.log_tail_cursor(id, Some(step), LOG_TAIL_BYTES).await.map_err(ApiError::from)?;
    let query = LogsQuery {
        step: Some(step.to_string()),
        after: Some(from),
        max_bytes: Some(LOG_TAIL_BYTES * 2),
        ..LogsQuery::default()
    };
    let axum::Json(page) = crate::routes::jobs::job_logs(
        Admin,
        req.scope.clone(),
        State(state.clone()),
        ApiPath(id),
        ApiQuery(query),
    )
    .await?;
    let mut bytes: Vec<u8> = Vec::new();
    for c in &page.chunks {
        bytes.extend_from_slice(&c.data.0);
    }
    // The tail starts on a chunk boundary; a page shows at most LOG_TAIL_BYTES of it.
    let cut = from > 0 || bytes.len() as u64 > LOG_TAIL_BYTES || !page.truncated.is_empty();
    if bytes.len() as u64 > LOG_TAIL_BYTES {
        bytes.drain(..bytes.len() - LOG_TAIL_BYTES as usize);
    }
    Ok(LogsFragment {
        step: step.to_string(),
        // Escaped by the template; invalid UTF-8 shows as U+FFFD (the download is byte-exact).
        text: String::from_utf8_lossy(&bytes).into_owned(),
        cut,
        download: format!("/ui/jobs/{id}/logs.txt?ns={}&step={}", urlencode(&req.ns), urlencode(step)),
        empty: bytes.is_empty(),
    })
}

/// `GET /ui/jobs/{id}/logs`: the selected step's output tail (the live part of a job page).
pub(crate) async fn logs(
    req: UiRequest,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
    Query(q): Query<StepQuery>,
) -> Result<Response, UiError> {
    let (_, step) = detail(&req, &state, id, q.step.as_deref()).await?;
    html(&logs_fragment(&req, &state, id, step.as_deref()).await?)
}

/// `GET /ui/jobs/{id}/logs.txt`: a step's whole output, byte-exact, as a download (streamed
/// page by page, never held whole).
pub(crate) async fn download(
    req: UiRequest,
    State(state): State<AppState>,
    Path(id): Path<JobId>,
    Query(q): Query<StepQuery>,
) -> Result<Response, UiError> {
    let (_, step) = detail(&req, &state, id, q.step.as_deref()).await?;
    let name = step.clone().unwrap_or_else(|| "job".into());
    let scope = req.scope.clone();
    let stream = futures_util::stream::unfold(Some(0i64), move |after| {
        let (state, scope, step) = (state.clone(), scope.clone(), step.clone());
        async move {
            let after = after?;
            let query = LogsQuery { step, after: Some(after), ..LogsQuery::default() };
            match crate::routes::jobs::job_logs(Admin, scope, State(state), ApiPath(id), ApiQuery(query))
                .await
            {
                Ok(axum::Json(page)) if page.chunks.is_empty() => None,
                Ok(axum::Json(page)) => {
                    let mut bytes = Vec::new();
                    for c in &page.chunks {
                        bytes.extend_from_slice(&c.data.0);
                    }
                    Some((Ok::<_, std::io::Error>(bytes), Some(page.next_cursor)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.message)), None)),
            }
        }
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let file: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}-{file}.log\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
