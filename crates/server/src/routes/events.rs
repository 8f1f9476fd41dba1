//! `GET /api/v1/events`: the event stream as Server-Sent Events, filtered per client
//! (namespace, job, worker, kind). Each client's events are coalesced into at most
//! [`FLUSHES_PER_SECOND`] writes a second; a client that falls [`crate::feed::CLIENT_QUEUE`]
//! events behind gets a `resync` and is dropped. A followed stream ends after the longest
//! poll (`ServerConfig::max_poll`): SSE clients reconnect with `Last-Event-ID` and lose
//! nothing. Numbering and replay are `feed.rs`'s.

use crate::auth::Viewer;
use crate::error::{ApiError, ApiQuery};
use crate::feed::{Feed, ResyncWhy};
use crate::metrics::Metrics;
use crate::namespace::Scope;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use rota_api_types::events::{EventsQuery, KINDS, StreamEvent};
use rota_domain::JobId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Writes per client per second, at most.
const FLUSHES_PER_SECOND: u32 = 10;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long an SSE client waits before reconnecting (the `retry:` field), in ms.
const RETRY_MS: u64 = 1000;

/// What one client sees.
struct Filter {
    namespace: Option<String>,
    job: Option<JobId>,
    worker: Option<String>,
    kinds: Option<Vec<String>>,
}

impl Filter {
    fn admits(&self, e: &StreamEvent) -> bool {
        if e.kind == "resync" {
            return true;
        }
        // An event whose namespace is unknown (from an older server) is shown only to
        // clients that watch every namespace.
        self.namespace.as_ref().is_none_or(|ns| e.namespace.as_ref() == Some(ns))
            && self.job.is_none_or(|j| e.job == Some(j))
            && self.worker.as_ref().is_none_or(|w| e.worker.as_ref() == Some(w))
            && self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
    }
}

/// The events of the control plane as they happen (Server-Sent Events; each `data:` is a
/// `StreamEvent`). With `Last-Event-ID` (or `lastEventId`) of this server still in its replay
/// buffer of 4096 events, the events missed since are sent first, in order, once; otherwise
/// (an older or another server's id, or bus messages this server missed since) a `resync`
/// comes first: reload state, then carry on. Without `follow` the stream holds what the
/// buffer has and ends; with it, new events follow until the server's longest poll, then the
/// client reconnects.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("admin" = [])),
    params(EventsQuery, rota_api_types::namespace::NamespaceQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received")),
    responses((status = 200, description = "Server-Sent Events; each data line is a StreamEvent", content_type = "text/event-stream", body = StreamEvent),
        (status = 400), (status = 401), (status = 403)))]
pub(crate) async fn events(
    _: Viewer,
    scope: Scope,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let kinds = match &q.kind {
        None => None,
        Some(k) => {
            let list: Vec<String> =
                k.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if let Some(bad) = list.iter().find(|k| !KINDS.contains(&k.as_str())) {
                return Err(ApiError::bad_request(format!(
                    "kind: '{bad}' is not one of {}",
                    KINDS.join(", ")
                )));
            }
            Some(list)
        }
    };
    if let Some(w) = &q.worker {
        rota_domain::limits::check_text("worker", w, rota_domain::limits::MAX_NAME)
            .map_err(ApiError::limit)?;
    }
    let last = match headers.get("last-event-id") {
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?.to_string())
        }
        None => q.last_event_id.clone(),
    };
    let filter =
        Filter { namespace: scope.filter().map(str::to_string), job: q.job, worker: q.worker.clone(), kinds };
    let start = state.feed.connect(last.as_deref());
    if let Some(r) = &start.resync {
        state.metrics.resync(ResyncWhy::StaleId.label());
        tracing::debug!(reason = ?r.state, "event stream: resync at connection");
    }
    let mut first = format!("retry: {RETRY_MS}\n\n");
    for e in start.resync.iter().chain(start.replay.iter().map(Arc::as_ref)).filter(|e| filter.admits(e)) {
        write_event(&mut first, e);
    }
    // The position, so a client that was sent nothing still reconnects from here.
    first.push_str(&format!("id: {}\n\n", start.position));
    let client = Client {
        feed: state.feed.clone(),
        metrics: state.metrics.clone(),
        filter,
        live: start.live,
        first: Some(first),
        follow: q.follow.unwrap_or(false),
        until: Instant::now() + state.config.max_poll,
        last_flush: None,
        done: false,
        shutdown: state.shutdown.clone(),
    };
    let body = Body::from_stream(futures_util::stream::unfold(client, |mut c| async move {
        let chunk = c.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), c))
    }));
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response())
}

fn write_event(out: &mut String, e: &StreamEvent) {
    // One `data:` line: serde_json never writes a raw newline.
    let data = serde_json::to_string(e).unwrap_or_default();
    out.push_str(&format!("id: {}\nevent: {}\ndata: {data}\n\n", e.id, e.kind));
}

/// One connected client.
struct Client {
    feed: Arc<Feed>,
    metrics: Arc<Metrics>,
    filter: Filter,
    live: tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
    first: Option<String>,
    follow: bool,
    until: Instant,
    last_flush: Option<Instant>,
    done: bool,
    shutdown: CancellationToken,
}

impl Client {
    /// The next write: the replay first, then coalesced live events; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(Bytes::from(first));
        }
        if self.done || !self.follow {
            return None;
        }
        loop {
            if let Some(t) = self.last_flush {
                let next = t + Duration::from_secs(1) / FLUSHES_PER_SECOND;
                tokio::select! {
                    _ = tokio::time::sleep_until(next.min(self.until)) => {}
                    _ = self.shutdown.cancelled() => return None,
                }
            }
            let mut batch = VecDeque::new();
            tokio::select! {
                got = self.live.recv() => batch.push_back(got),
                _ = tokio::time::sleep(KEEPALIVE) => return Some(Bytes::from_static(b": keepalive\n\n")),
                _ = tokio::time::sleep_until(self.until) => return None,
                _ = self.shutdown.cancelled() => return None,
            }
            // Whatever else arrived since the last write goes in the same one.
            loop {
                match self.live.try_recv() {
                    Ok(e) => batch.push_back(Ok(e)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(n)) => batch.push_back(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => batch.push_back(Err(RecvError::Closed)),
                }
                if batch.len() >= crate::feed::CLIENT_QUEUE {
                    break;
                }
            }
            let mut out = String::new();
            for got in batch {
                match got {
                    Ok(e) => {
                        if self.filter.admits(&e) {
                            if e.kind == "resync" {
                                self.metrics.resync(ResyncWhy::Missed.label());
                            }
                            write_event(&mut out, &e);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Too far behind: told to reload, and dropped.
                        self.metrics.resync(ResyncWhy::Slow.label());
                        let resync = self.feed.resync_event(self.feed.position(), ResyncWhy::Slow);
                        write_event(&mut out, &resync);
                        self.done = true;
                        break;
                    }
                    Err(RecvError::Closed) => {
                        self.done = true;
                        break;
                    }
                }
            }
            self.last_flush = Some(Instant::now());
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
            if self.done {
                return None;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_store::bus::{Envelope, Event};
    use rota_store::leader::ServerId;

    fn client(feed: &Arc<Feed>) -> Client {
        let start = feed.connect(None);
        Client {
            feed: feed.clone(),
            metrics: Arc::new(Metrics::default()),
            filter: Filter { namespace: None, job: None, worker: None, kinds: None },
            live: start.live,
            first: None,
            follow: true,
            until: Instant::now() + Duration::from_secs(60),
            last_flush: None,
            done: false,
            shutdown: CancellationToken::new(),
        }
    }

    fn publish(feed: &Feed, n: usize) {
        let events = (0..n).map(|_| Event::Logs { job: JobId::new(), namespace: None }).collect();
        feed.heard(&Envelope { origin: ServerId::new(), seq: 1, events });
    }

    #[tokio::test]
    async fn what_arrives_between_writes_goes_out_in_one_write() {
        let feed = Arc::new(Feed::new(ServerId::new()));
        let mut c = client(&feed);
        publish(&feed, 5);
        let chunk = c.next_chunk().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&chunk).matches("event: logs").count(), 5);
    }

    #[tokio::test]
    async fn a_client_that_falls_too_far_behind_gets_a_resync_and_is_dropped() {
        let feed = Arc::new(Feed::new(ServerId::new()));
        let mut c = client(&feed);
        publish(&feed, crate::feed::CLIENT_QUEUE + 10);
        let mut text = String::new();
        while let Some(chunk) = c.next_chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.ends_with("\n\n") && text.contains("event: resync"), "{text}");
        assert!(text.contains(r#""state":"slow""#));
    }
}
