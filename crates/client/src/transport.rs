//! One pooled `reqwest::Client` per rota client (keep-alive reuse), its server list and
//! failover between them, URL building, bearer auth, per-request timeouts and the mapping of
//! replies to [`ClientError`]. It knows no routes and no bodies beyond `ErrorBody`; whether a
//! call may be sent again to another server is the caller's word ([`Failover`]), never
//! guessed here.

use crate::error::{ClientError, Result};
use reqwest::{Method, StatusCode, Url};
use rota_api_types::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Timeout of an ordinary call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a long-poll call gets on top of the wait it asked the server for.
pub(crate) const LONG_POLL_SLACK: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout for a long-poll call that asked the server to wait `wait_ms`.
pub(crate) fn long_poll_timeout(wait_ms: u64) -> Duration {
    Duration::from_millis(wait_ms) + LONG_POLL_SLACK
}

/// When a call that failed on one server may go to the next one of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failover {
    /// The call is idempotent or the server de-duplicates it (reads, claims, heartbeats,
    /// completions with fencing, logs with seq, submits with an idempotency key): after a
    /// connection failure, a timeout or a 502/503/504 it is sent to the next server.
    Always,
    /// Sending it twice could act twice: it moves on only when it never left this machine
    /// (the connection could not be made).
    Unsent,
}

/// The servers of one control plane and the one that answered last. Shared by clones, so
/// every call of a client (and of the worker's tasks) starts where the last one succeeded.
#[derive(Debug)]
struct Servers {
    bases: Vec<Url>,
    current: AtomicUsize,
}

/// A list of base URLs and a connection pool.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    servers: Arc<Servers>,
}

/// A successful reply: its status and raw body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) url: Url,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// Decodes the body as JSON.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|source| ClientError::Decode { url: self.url.to_string(), source })
    }
}

/// A path under the base URL (segments percent-encoded when joined) and query pairs.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    segments: Vec<String>,
    query: Vec<(String, String)>,
}

/// One request to make.
pub(crate) struct Call<'a, B: Serialize + ?Sized> {
    pub(crate) method: Method,
    pub(crate) route: Route,
    pub(crate) token: Option<&'a str>,
    pub(crate) body: Option<&'a B>,
    pub(crate) timeout: Duration,
    pub(crate) headers: &'a [(&'static str, &'a str)],
    pub(crate) failover: Failover,
}

impl Transport {
    /// A transport for `servers`: one address or a comma-separated list (see
    /// [`crate::server_urls`]).
    pub(crate) fn new(servers: &str, ca: &crate::CaCerts) -> Result<Self> {
        let bases = crate::server_urls(servers)?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(ca.certificates())
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::InvalidServer(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, servers: Arc::new(Servers { bases, current: AtomicUsize::new(0) }) })
    }

    /// The base URL calls go to first: the server that answered last.
    pub(crate) fn base(&self) -> &Url {
        let n = self.servers.bases.len();
        &self.servers.bases[self.servers.current.load(Ordering::Relaxed) % n]
    }

    /// Every server's base URL, in the order given.
    pub(crate) fn bases(&self) -> &[Url] {
        &self.servers.bases
    }

    /// The given path segments and query pairs, to be joined to a base URL.
    pub(crate) fn route(&self, segments: &[&str], query: &[(&str, String)]) -> Route {
        Route {
            segments: segments.iter().map(|s| (*s).to_string()).collect(),
            query: query.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect(),
        }
    }

    /// `base` + the route's segments (percent-encoded) + its query pairs.
    fn url(base: &Url, route: &Route) -> Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&route.segments);
        }
        if !route.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &route.query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a call, starting with the server that answered last and moving on to the next
    /// ones (round-robin) as long as [`Failover`] allows; 2xx replies come back as
    /// [`Reply`], everything else as the last server's error, naming the others tried.
    pub(crate) async fn send<B: Serialize + ?Sized>(&self, call: Call<'_, B>) -> Result<Reply> {
        self.send_body(call, None).await
    }

    /// [`Self::send`] with `body`, of media type `content_type`, as the request body (not
    /// JSON): the binary form of log batches.
    pub(crate) async fn send_raw(
        &self,
        call: Call<'_, ()>,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Reply> {
        self.send_body(call, Some((content_type, body))).await
    }

    async fn send_body<B: Serialize + ?Sized>(
        &self,
        call: Call<'_, B>,
        mut raw: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply> {
        let bases = &self.servers.bases;
        let n = bases.len();
        let start = self.servers.current.load(Ordering::Relaxed) % n;
        let mut tried: Vec<String> = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            // The last server to try gets the body itself; others a copy (failover only).
            let raw_here = if i + 1 == n { raw.take() } else { raw.clone() };
            let err = match self.send_to(&bases[at], &call, raw_here).await {
                Ok(reply) => {
                    if at != start {
                        self.servers.current.store(at, Ordering::Relaxed);
                        tracing::info!(server = %bases[at], after = ?tried, "rota server failover");
                    }
                    return Ok(reply);
                }
                Err(e) => e,
            };
            let server_trouble = fails_over(&err, Failover::Always);
            if server_trouble && n > 1 {
                // Later calls start with the next server, whatever this one does.
                let _ = self.servers.current.compare_exchange(
                    at,
                    (at + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if i + 1 == n || !fails_over(&err, call.failover) {
                return Err(with_tried(err, tried));
            }
            tracing::debug!(server = %bases[at], "rota call failed, trying the next server: {err}");
            tried.push(format!("{} ({})", bases[at].as_str().trim_end_matches('/'), brief(&err)));
        }
        Err(ClientError::InvalidServer("no server address given".into()))
    }

    /// Sends a call as [`Self::send`] does, but hands back the 2xx response with its body
    /// unread, for a stream (the event stream).
    pub(crate) async fn open<B: Serialize + ?Sized>(&self, call: Call<'_, B>) -> Result<reqwest::Response> {
        let bases = &self.servers.bases;
        let n = bases.len();
        let start = self.servers.current.load(Ordering::Relaxed) % n;
        let mut tried: Vec<String> = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let err = match self.respond(&bases[at], &call, None).await {
                Ok((_, resp)) => {
                    if at != start {
                        self.servers.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Err(e) => e,
            };
            if i + 1 == n || !fails_over(&err, call.failover) {
                return Err(with_tried(err, tried));
            }
            tried.push(format!("{} ({})", bases[at].as_str().trim_end_matches('/'), brief(&err)));
        }
        Err(ClientError::InvalidServer("no server address given".into()))
    }

    /// Sends a call to one server.
    async fn send_to<B: Serialize + ?Sized>(
        &self,
        base: &Url,
        call: &Call<'_, B>,
        raw: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply> {
        let (url, resp) = self.respond(base, call, raw).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&url, e))?.to_vec();
        Ok(Reply { status, url, body })
    }

    /// Sends a call to one server: its 2xx response, body unread, or the error it answered.
    async fn respond<B: Serialize + ?Sized>(
        &self,
        base: &Url,
        call: &Call<'_, B>,
        raw: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(Url, reqwest::Response)> {
        let url = Self::url(base, &call.route);
        let method = call.method.clone();
        let mut req = self.http.request(method.clone(), url.clone()).timeout(call.timeout);
        if let Some(token) = call.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in call.headers {
            req = req.header(*name, *value);
        }
        if let Some((content_type, body)) = raw {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        } else if let Some(body) = call.body {
            req = req.json(body);
        }
        tracing::trace!(%method, %url, "rota call");
        let resp = req.send().await.map_err(|e| transport_error(&url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok((url, resp));
        }
        let body = resp.bytes().await.map_err(|e| transport_error(&url, e))?.to_vec();
        Err(http_error(status, &body))
    }
}

/// Whether `err` lets a call with this [`Failover`] go on to the next server: a server that
/// is down, unreachable, too slow or behind a gateway that says so. Anything the server
/// itself decided (4xx, 500, 507) would be decided the same way by the others.
fn fails_over(err: &ClientError, failover: Failover) -> bool {
    match (err, failover) {
        (ClientError::Unreachable { source, .. }, Failover::Unsent) => source.is_connect(),
        (ClientError::Unreachable { .. }, Failover::Always) => true,
        (ClientError::Http { status: 502..=504, .. }, Failover::Always) => true,
        _ => false,
    }
}

/// A few words on why a server was left, for the error of the last one.
fn brief(err: &ClientError) -> String {
    match err {
        ClientError::Unreachable { source, .. } if source.is_timeout() => "timed out".into(),
        ClientError::Unreachable { source, .. } if source.is_connect() => "cannot connect".into(),
        ClientError::Unreachable { .. } => "connection lost".into(),
        ClientError::Http { status, code, .. } => format!("{status} {code}"),
        other => other.to_string(),
    }
}

/// The last server's error, naming the servers tried before it.
fn with_tried(err: ClientError, tried: Vec<String>) -> ClientError {
    if tried.is_empty() {
        return err;
    }
    match err {
        ClientError::Unreachable { url, source, .. } => ClientError::Unreachable { url, source, tried },
        ClientError::Http { status, code, message, pointer } => {
            let message = format!("{message} (after trying {})", tried.join(", "));
            ClientError::Http { status, code, message, pointer }
        }
        other => other,
    }
}

fn transport_error(url: &Url, e: reqwest::Error) -> ClientError {
    if e.is_builder() {
        ClientError::InvalidServer(format!("cannot call {url}: {e}"))
    } else {
        ClientError::Unreachable { url: url.to_string(), source: e, tried: Vec::new() }
    }
}

/// Builds [`ClientError::Http`] from a non-2xx reply, using its `ErrorBody` when it has one.
fn http_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Http {
            status: status.as_u16(),
            code: parsed.error.code,
            message: parsed.error.message,
            pointer: parsed.error.pointer,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        None => text.to_string(),
    };
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "unprocessable",
        _ => "http_error",
    };
    ClientError::Http { status: status.as_u16(), code: code.into(), message, pointer: None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_parsed_and_plain_text_is_kept() {
        let body = br#"{"error":{"code":"conflict","message":"attempt 7 is not held"}}"#;
        match http_error(StatusCode::CONFLICT, body) {
            ClientError::Http { status: 409, code, message, .. } => {
                assert_eq!(code, "conflict");
                assert_eq!(message, "attempt 7 is not held");
            }
            other => panic!("{other:?}"),
        }
        let e = http_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(e.status(), Some(502));
        assert!(e.is_transient());
        assert!(e.to_string().contains("upstream down"));
        let e = http_error(StatusCode::UNAUTHORIZED, b"");
        assert!(e.is_unauthorized());
    }

    #[test]
    fn urls_encode_segments_and_keep_prefixes() {
        let url = |t: &Transport, segments: &[&str], query: &[(&str, String)]| {
            Transport::url(t.base(), &t.route(segments, query)).to_string()
        };
        let t = Transport::new("https://h.example/rota/", &crate::CaCerts::default()).unwrap();
        let u = url(&t, &["worker", "jobs", "x", "steps", "a b/c", "start"], &[]);
        assert_eq!(u, "https://h.example/rota/worker/jobs/x/steps/a%20b%2Fc/start");
        let t = Transport::new("zeus:7777", &crate::CaCerts::default()).unwrap();
        let u = url(&t, &["api", "v1", "jobs"], &[("state", "running".into()), ("limit", "5".into())]);
        assert_eq!(u, "http://zeus:7777/api/v1/jobs?state=running&limit=5");
        assert_eq!(url(&t, &["healthz"], &[]), "http://zeus:7777/healthz");
    }
}

/// Failover against real sockets: a closed port and tiny HTTP servers that answer one
/// canned reply to every request and count them.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod failover_tests {
    use crate::{Client, ClientError};
    use rota_domain::JobId;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering `status` with `body` to every request; returns its address and
    /// its request counter.
    async fn canned(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut seen = Vec::new();
                    // Reads the head (no test request has a body longer than what follows it).
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (addr, hits)
    }

    const HEALTH: &str = r#"{"status":"ok","version":"test"}"#;

    #[tokio::test]
    async fn a_dead_first_server_is_skipped_and_the_one_that_answered_is_remembered() {
        let (live, hits) = canned("200 OK", HEALTH).await;
        let c = Client::new(&format!("127.0.0.1:1,{live}"), None).unwrap();
        assert_eq!(c.server_urls().len(), 2);
        assert_eq!(c.healthz().await.unwrap().status, "ok");
        assert_eq!(c.base_url().as_str(), format!("http://{live}/"));
        c.healthz().await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_gateway_error_fails_over_for_reads_but_not_for_a_retry() {
        let (gateway, gw_hits) = canned("503 Service Unavailable", "").await;
        let (live, live_hits) = canned("200 OK", HEALTH).await;
        let c = Client::new(&format!("{gateway},{live}"), None).unwrap();
        c.healthz().await.unwrap();
        assert_eq!((gw_hits.load(Ordering::SeqCst), live_hits.load(Ordering::SeqCst)), (1, 1));

        // `retry` could act twice: a 503 (the request reached something) is final, but the
        // next call starts with the next server.
        let c = Client::new(&format!("{gateway},{live}"), None).unwrap();
        let err = c.retry_job(JobId::new()).await.unwrap_err();
        assert_eq!(err.status(), Some(503), "{err}");
        assert_eq!(live_hits.load(Ordering::SeqCst), 1, "a retry was sent twice");
        assert_eq!(c.base_url().as_str(), format!("http://{live}/"));
    }

    #[tokio::test]
    async fn a_refused_connection_fails_over_even_for_calls_that_could_act_twice() {
        let (live, hits) = canned("409 Conflict", r#"{"error":{"code":"conflict","message":"no"}}"#).await;
        let c = Client::new(&format!("127.0.0.1:1,{live}"), None).unwrap();
        let err = c.retry_job(JobId::new()).await.unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A 409 is the control plane's answer: never sent to another server.
        let c = Client::new(&format!("{live},127.0.0.1:1"), None).unwrap();
        assert!(c.list_workers().await.unwrap_err().is_conflict());
        assert_eq!(c.base_url().as_str(), format!("http://{live}/"));
    }

    #[tokio::test]
    async fn when_every_server_is_down_the_error_names_each() {
        let c = Client::new("127.0.0.1:1,127.0.0.1:2", None).unwrap();
        let err = c.healthz().await.unwrap_err();
        assert!(err.is_unreachable() && err.is_transient(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
        match err {
            ClientError::Unreachable { tried, .. } => assert_eq!(tried.len(), 1),
            other => panic!("{other:?}"),
        }
    }
}
