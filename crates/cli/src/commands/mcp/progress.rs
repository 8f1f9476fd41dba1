//! `heal_workers` with MCP progress: while the server heals (one call that answers when
//! every heal has an outcome), its `heal` events from the event stream are sent to the
//! caller as `notifications/progress`; the answer's steps that did not come live (the
//! stream coalesces, may lose events, and is closed when the answer comes) follow, then one
//! last notification sums the outcome, so a caller that asked for progress always gets it.

use super::tools::failed;
use crate::commands::job::Api;
use crate::commands::worker::heal::heal_fleet;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use rota_api_types::events::{EventsQuery, StreamEvent};
use rota_api_types::supervisors::HealEvent;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A heal step sent live: its phase and host.
type Step = (String, Option<String>);

/// Where progress goes: the caller and the token it gave.
#[derive(Clone)]
pub(super) struct Progress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
    /// Notifications sent so far (progress must rise with each).
    sent: Arc<AtomicU32>,
    /// The heal steps sent live.
    live: Arc<Mutex<Vec<Step>>>,
}

impl Progress {
    pub(super) fn new(peer: Peer<RoleServer>, token: ProgressToken) -> Self {
        Self { peer, token, sent: Arc::new(AtomicU32::new(0)), live: Arc::default() }
    }

    /// Whether a step like `e` was sent live (each live one answers for one step only).
    fn sent_live(&self, e: &HealEvent) -> bool {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.iter().position(|(phase, host)| *phase == e.phase && (host.is_none() || *host == e.host)) {
            Some(i) => {
                live.remove(i);
                true
            }
            None => false,
        }
    }

    async fn send(&self, message: String) {
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let param = ProgressNotificationParam::new(self.token.clone(), f64::from(n)).with_message(message);
        if let Err(e) = self.peer.notify_progress(param).await {
            tracing::debug!("cannot send a progress notification: {e}");
        }
    }
}

pub(super) async fn heal(
    api: &Api,
    dry_run: bool,
    wait: Duration,
    progress: Option<Progress>,
) -> CallToolResult {
    let forward = match &progress {
        Some(p) => follow_heal_events(api, p.clone()).await,
        None => None,
    };
    let result = heal_fleet(api, dry_run, wait, None).await;
    if let Some(task) = forward {
        task.abort();
    }
    let resp = match result {
        Ok(r) => r,
        Err(e) => return failed(format!("{e:#}")),
    };
    if let Some(p) = &progress {
        for e in resp.events.iter().filter(|e| e.phase != "done") {
            if !p.sent_live(e) {
                p.send(describe(e)).await;
            }
        }
        let done = resp.events.iter().find(|e| e.phase == "done");
        let (healed, failed) = done.map_or((0, 0), |d| (d.healed.unwrap_or(0), d.failed.unwrap_or(0)));
        let summary = if dry_run {
            let n = resp.events.iter().filter(|e| e.phase == "detected").count();
            format!("done: {n} worker(s) would be healed")
        } else {
            format!("done: healed {healed} worker(s), {failed} failed")
        };
        p.send(summary).await;
    }
    match serde_json::to_string_pretty(&resp) {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(e) => failed(format!("cannot encode the result: {e}")),
    }
}

/// Starts forwarding the heal events that happen from now on; `None` when the stream
/// cannot be opened (the final notification still comes).
async fn follow_heal_events(api: &Api, progress: Progress) -> Option<tokio::task::JoinHandle<()>> {
    let mut query = EventsQuery { kind: Some("heal".into()), ..EventsQuery::default() };
    // What the replay buffer holds is old heals: read it to its end, then follow from there.
    let mut last: Option<String> = None;
    match api.client.events(&query, None).await {
        Ok(mut past) => {
            while let Ok(Some(_)) = past.next().await {}
            last = past.last_id().map(str::to_string);
        }
        Err(e) => tracing::debug!("heal progress: cannot read the event stream: {e}"),
    }
    query.follow = Some(true);
    let mut stream = match api.client.events(&query, last.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("heal progress: cannot follow the event stream: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(Some(e)) = stream.next().await {
            // `done` is said once, by the summary.
            let Some(phase) = e.state.clone().filter(|_| e.kind == "heal") else { continue };
            if phase == "done" {
                continue;
            }
            // Recorded once sent: a step cut off in between is sent again, never lost.
            progress.send(describe_streamed(&e)).await;
            progress.live.lock().unwrap_or_else(PoisonError::into_inner).push((phase, e.host.clone()));
        }
    }))
}

/// A heal step of the answer, in words.
fn describe(e: &HealEvent) -> String {
    let mut s = format!("heal {}", e.phase);
    if let Some(w) = &e.worker {
        s.push_str(&format!(" {w}"));
    }
    if let Some(h) = &e.host {
        s.push_str(&format!(" on {h}"));
    }
    if let Some(err) = &e.error {
        s.push_str(&format!(": {err}"));
    }
    s
}

/// A streamed heal event, in words.
fn describe_streamed(e: &StreamEvent) -> String {
    let mut s = format!("heal {}", e.state.as_deref().unwrap_or("?"));
    if let Some(h) = &e.host {
        s.push_str(&format!(" on {h}"));
    }
    if let Some(d) = &e.detail {
        s.push_str(&format!(": {d}"));
    }
    s
}
