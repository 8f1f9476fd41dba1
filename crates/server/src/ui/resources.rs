//! The resources page: one kind at a time (workflows with a Run form for their inputs,
//! schedules with their last and next run, missed fires and Suspend, pools and configs with
//! their generation and conditions, secrets by key name only), a page of rows at a time.

use super::{Chrome, MAX_PAGE_ROWS, UiError, UiRequest, html, urlencode, when};
use crate::auth::Admin;
use crate::error::{ApiPath, ApiQuery};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use rota_api_types::resources::{ListResourcesQuery, ResourceSpec, ResourceView};
use serde::Deserialize;

/// The kinds, as the page's tabs: (their plural, as the API's paths take it, label).
const KINDS: &[(&str, &str)] = &[
    ("workflows", "Workflows"),
    ("schedules", "Schedules"),
    ("workerpools", "Pools"),
    ("workerconfigs", "Configs"),
    ("secrets", "Secrets"),
];

#[derive(Deserialize, Default)]
pub(crate) struct ResourcesQuery {
    kind: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

pub(crate) struct InputField {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) default: String,
    pub(crate) description: String,
}

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) generation: u64,
    pub(crate) observed: u64,
    pub(crate) conditions: Vec<String>,
    /// Kind-specific columns, already text.
    pub(crate) cells: Vec<String>,
    /// Workflows: the Run form's fields.
    pub(crate) inputs: Vec<InputField>,
    /// Schedules: whether suspended (the button says the other).
    pub(crate) suspended: Option<bool>,
    /// Schedules: the last run's job.
    pub(crate) last_job: Option<String>,
    pub(crate) name_q: String,
}

#[derive(Template)]
#[template(path = "ui/resources_live.html")]
struct ResourcesLive {
    kind: String,
    nsq: String,
    all: bool,
    headers: Vec<&'static str>,
    rows: Vec<Row>,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/resources.html")]
struct ResourcesPage {
    chrome: Chrome,
    tabs: Vec<(&'static str, &'static str, bool)>,
    live_url: String,
    live: String,
}

fn conditions(v: &ResourceView) -> Vec<String> {
    v.status
        .conditions
        .iter()
        .map(|c| {
            let status = serde_json::to_value(c.status)
                .ok()
                .and_then(|s| s.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{} {} {}: {}", c.kind, status, c.reason, c.message)
        })
        .collect()
}

fn row(v: &ResourceView) -> Row {
    let mut r = Row {
        name: v.metadata.name.clone(),
        namespace: v.metadata.namespace.clone(),
        generation: v.metadata.generation,
        observed: v.status.observed_generation,
        conditions: conditions(v),
        cells: Vec::new(),
        inputs: Vec::new(),
        suspended: None,
        last_job: None,
        name_q: urlencode(&v.metadata.name),
    };
    match &v.spec {
        ResourceSpec::Workflow(w) => {
            r.cells = vec![
                w.steps.len().to_string(),
                w.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
            ];
            r.inputs = w
                .inputs
                .iter()
                .map(|(name, i)| InputField {
                    name: name.clone(),
                    kind: match i.kind {
                        rota_domain::workflow::InputType::String => "text",
                        rota_domain::workflow::InputType::Integer
                        | rota_domain::workflow::InputType::Number => "number",
                        rota_domain::workflow::InputType::Boolean => "checkbox",
                    },
                    default: i.default.as_ref().map(|d| d.text()).unwrap_or_default(),
                    description: i.description.clone().unwrap_or_default(),
                })
                .collect();
        }
        ResourceSpec::Schedule(s) => {
            let st = v.status.schedule.as_ref();
            let last = st.and_then(|x| x.last_run.as_ref());
            r.cells = vec![
                format!("{} ({})", s.cron, s.time_zone.as_deref().unwrap_or("UTC")),
                s.workflow.clone(),
                last.map(|l| {
                    let state = l.state.map(|s| s.as_str()).unwrap_or("");
                    format!("{} {state}", when(l.fire_time))
                })
                .unwrap_or_else(|| "never".into()),
                st.and_then(|x| x.next_fire_time).map(when).unwrap_or_else(|| "—".into()),
                st.map(|x| x.recent_not_run.len().to_string()).unwrap_or_default(),
            ];
            r.suspended = Some(s.suspend);
            r.last_job = last.and_then(|l| l.job_id).map(|j| j.to_string());
        }
        ResourceSpec::WorkerPool(p) => {
            r.cells = vec![serde_json::to_string(&p.selector).unwrap_or_default(), p.priority.to_string()];
        }
        ResourceSpec::WorkerConfig(c) => {
            r.cells = vec![
                serde_json::to_string(&c.selector).unwrap_or_default(),
                c.env.keys().cloned().collect::<Vec<_>>().join(", "),
                c.files.len().to_string(),
            ];
        }
        ResourceSpec::Secret(s) => {
            r.cells = vec![s.keys.iter().map(|(k, n)| format!("{k} ({n} B)")).collect::<Vec<_>>().join(", ")];
        }
    }
    r
}

fn headers(kind: &str) -> Vec<&'static str> {
    match kind {
        "workflows" => vec!["steps", "step names"],
        "schedules" => vec!["cron", "workflow", "last run", "next run", "missed or skipped"],
        "workerpools" => vec!["selector", "priority"],
        "workerconfigs" => vec!["selector", "env", "files"],
        _ => vec!["keys (names and sizes; values are never shown)"],
    }
}

/// `GET /ui/resources`.
pub(crate) async fn page(
    req: UiRequest,
    State(state): State<AppState>,
    Query(q): Query<ResourcesQuery>,
) -> Result<Response, UiError> {
    let kind = q.kind.filter(|k| KINDS.iter().any(|(p, _)| p == k)).unwrap_or_else(|| "workflows".into());
    let query =
        ListResourcesQuery { limit: Some(MAX_PAGE_ROWS as u32), continue_token: q.continue_token.clone() };
    let axum::Json(list) = crate::routes::resources::list(
        Admin,
        req.scope.clone(),
        State(state.clone()),
        ApiPath(kind.clone()),
        ApiQuery(query),
    )
    .await?;
    let nsq = format!("ns={}", urlencode(&req.ns));
    let mut rows: Vec<Row> = list.items.iter().map(row).collect();
    rows.truncate(MAX_PAGE_ROWS);
    let live = ResourcesLive {
        kind: kind.clone(),
        nsq: nsq.clone(),
        all: req.scope.all,
        headers: headers(&kind),
        rows,
        next: list.continue_token.map(|t| urlencode(&t)),
    };
    if req.fragment {
        return html(&live);
    }
    let chrome = req.chrome(&state, "Resources", "resources", "&kind=resource,resync").await;
    let cont = q.continue_token.map(|t| format!("&continue={}", urlencode(&t))).unwrap_or_default();
    html(&ResourcesPage {
        live_url: format!("/ui/resources?{nsq}&kind={kind}{cont}"),
        tabs: KINDS.iter().map(|(k, l)| (*k, *l, *k == kind)).collect(),
        chrome,
        live: live.render()?,
    })
}
