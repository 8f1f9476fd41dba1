//! The queues page: ready, running and paused per queue and how long the oldest waiting
//! job has waited, with Pause and Resume.

use super::{Chrome, MAX_PAGE_ROWS, UiError, UiRequest, age, html, urlencode};
use crate::auth::Admin;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;

pub(crate) struct QueueRow {
    pub(crate) namespace: String,
    pub(crate) queue: String,
    pub(crate) queue_q: String,
    pub(crate) ns_q: String,
    pub(crate) ready: u64,
    pub(crate) running: u64,
    pub(crate) paused: bool,
    pub(crate) oldest: String,
}

#[derive(Template)]
#[template(path = "ui/queues_live.html")]
struct QueuesLive {
    all: bool,
    rows: Vec<QueueRow>,
    more: usize,
}

#[derive(Template)]
#[template(path = "ui/queues.html")]
struct QueuesPage {
    chrome: Chrome,
    live_url: String,
    live: String,
}

/// `GET /ui/queues`.
pub(crate) async fn page(req: UiRequest, State(state): State<AppState>) -> Result<Response, UiError> {
    let axum::Json(list) =
        crate::routes::fleet::list_queues(Admin, req.scope.clone(), State(state.clone())).await?;
    let more = list.queues.len().saturating_sub(MAX_PAGE_ROWS);
    let rows = list
        .queues
        .iter()
        .take(MAX_PAGE_ROWS)
        .map(|q| QueueRow {
            namespace: q.namespace.clone(),
            queue: q.queue.clone(),
            queue_q: urlencode(&q.queue),
            ns_q: format!("ns={}", urlencode(&q.namespace)),
            ready: q.ready,
            running: q.running,
            paused: q.paused,
            oldest: q.oldest_waiting_since.map(age).unwrap_or_default(),
        })
        .collect();
    let live = QueuesLive { all: req.scope.all, rows, more };
    if req.fragment {
        return html(&live);
    }
    let chrome = req.chrome(&state, "Queues", "queues", "&kind=job,attempt,resync").await;
    html(&QueuesPage { live_url: format!("/ui/queues?{}", chrome.nsq()), chrome, live: live.render()? })
}
