//! One pooled `reqwest::Client` per rota client (keep-alive reuse), URL building, bearer
//! auth, per-request timeouts and the mapping of replies to [`ClientError`]. It knows no
//! routes and no bodies beyond `ErrorBody`.

use crate::error::{ClientError, Result};
use reqwest::{Method, StatusCode, Url};
use rota_api_types::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
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

/// A base URL and a connection pool.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    base: Url,
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

/// One request to make.
pub(crate) struct Call<'a, B: Serialize + ?Sized> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) token: Option<&'a str>,
    pub(crate) body: Option<&'a B>,
    pub(crate) timeout: Duration,
    pub(crate) headers: &'a [(&'static str, &'a str)],
}

impl Transport {
    /// A transport for `server` (see [`crate::server_url`]).
    pub(crate) fn new(server: &str) -> Result<Self> {
        let base = crate::server_url(server)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::InvalidServer(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base })
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `base` + the given path segments (percent-encoded) + query pairs.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a call; 2xx replies come back as [`Reply`], everything else as an error.
    pub(crate) async fn send<B: Serialize + ?Sized>(&self, call: Call<'_, B>) -> Result<Reply> {
        let Call { method, url, token, body, timeout, headers } = call;
        let mut req = self.http.request(method.clone(), url.clone()).timeout(timeout);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        tracing::trace!(%method, %url, "rota call");
        let resp = req.send().await.map_err(|e| transport_error(&url, e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| transport_error(&url, e))?.to_vec();
        if status.is_success() { Ok(Reply { status, url, body }) } else { Err(http_error(status, &body)) }
    }
}

fn transport_error(url: &Url, e: reqwest::Error) -> ClientError {
    if e.is_builder() {
        ClientError::InvalidServer(format!("cannot call {url}: {e}"))
    } else {
        ClientError::Unreachable { url: url.to_string(), source: e }
    }
}

/// Builds [`ClientError::Http`] from a non-2xx reply, using its `ErrorBody` when it has one.
fn http_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Http {
            status: status.as_u16(),
            code: parsed.error.code,
            message: parsed.error.message,
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
    ClientError::Http { status: status.as_u16(), code: code.into(), message }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_parsed_and_plain_text_is_kept() {
        let body = br#"{"error":{"code":"conflict","message":"attempt 7 is not held"}}"#;
        match http_error(StatusCode::CONFLICT, body) {
            ClientError::Http { status: 409, code, message } => {
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
        let t = Transport::new("https://h.example/rota/").unwrap();
        let u = t.url(&["worker", "jobs", "x", "steps", "a b/c", "start"], &[]);
        assert_eq!(u.as_str(), "https://h.example/rota/worker/jobs/x/steps/a%20b%2Fc/start");
        let t = Transport::new("zeus:7777").unwrap();
        let u = t.url(&["api", "v1", "jobs"], &[("state", "running".into()), ("limit", "5".into())]);
        assert_eq!(u.as_str(), "http://zeus:7777/api/v1/jobs?state=running&limit=5");
        assert_eq!(t.url(&["healthz"], &[]).as_str(), "http://zeus:7777/healthz");
    }
}
