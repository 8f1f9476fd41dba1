//! The request timeout against a real server on port 0 over real TCP: a request that
//! outlives it gets 408 in the JSON error shape; the long-polls are not cut by it. Headers
//! sent too slowly close the connection; oversized headers are refused; every route that
//! takes a body refuses one over its limit (413), with the right credential for the route.

#![allow(clippy::unwrap_used)]

use rota_server::ServerConfig;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-secret";
const JOIN: &str = "join-secret";
/// Short, so the test is quick; the long-polls below wait four times as long.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
const HEADER_TIMEOUT: Duration = Duration::from_millis(800);

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn rota_store::JobStore> =
        Arc::new(SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        admin_token: ADMIN.into(),
        join_token: JOIN.into(),
        request_timeout: REQUEST_TIMEOUT,
        header_read_timeout: HEADER_TIMEOUT,
        ..ServerConfig::default()
    };
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { rota_server::run(listener, store, config, stop).await.unwrap() }
    });
    Server { addr, stop, _dir: dir }
}

/// Sends `head` (request line and headers, without the blank line) and `body` (which may be
/// shorter than its Content-Length), then reads one response: (status, JSON body).
async fn exchange(addr: SocketAddr, head: &str, body: &[u8], declared_len: usize) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {declared_len}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk))
            .await
            .expect("no response within 60 s")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let headers = text[..end].to_ascii_lowercase();
            let len: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len || n == 0 {
                let status = text[9..12].parse().unwrap();
                let body = serde_json::from_slice(&buf[end + 4..]).unwrap_or(Value::Null);
                return (status, body);
            }
        }
        assert!(n > 0, "connection closed before a full response: {text}");
    }
}

async fn post(addr: SocketAddr, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let raw = body.to_string();
    exchange(
        addr,
        &format!("POST {path} HTTP/1.1\r\nAuthorization: Bearer {token}"),
        raw.as_bytes(),
        raw.len(),
    )
    .await
}

/// A submit whose body never finishes arriving is cut at the request timeout: 408 with
/// the `{"error": {"code", "message"}}` body of every other error, naming the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_timeout_gets_408_in_the_json_error_shape() {
    let server = start().await;
    let started = Instant::now();
    let partial = br#"{"steps": [{"name": "a", "#;
    let (status, body) = exchange(
        server.addr,
        &format!("POST /api/v1/jobs HTTP/1.1\r\nAuthorization: Bearer {ADMIN}"),
        partial,
        partial.len() + 100,
    )
    .await;
    eprintln!("timed-out submit answered after {:?}", started.elapsed());
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("request timeout (500ms)"), "{message}");
    // The server itself is fine: a whole request is answered as usual.
    let (status, body) =
        post(server.addr, "/api/v1/jobs", ADMIN, &json!({"steps": [{"name": "a", "run": "true"}]})).await;
    assert_eq!(status, 201, "{body}");
}

/// A claim and a log follow that wait four times the request timeout are answered normally:
/// long-polls are bounded by `max_poll`, never by the request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn long_polls_outlive_the_request_timeout() {
    let server = start().await;
    let reg = json!({"protocolVersion": 1, "name": "w", "host": "h", "version": "t", "queues": ["other"], "concurrency": 1});
    let (status, v) = post(server.addr, "/worker/register", JOIN, &reg).await;
    assert_eq!(status, 200, "{v}");
    let cred = v["credential"].as_str().unwrap().to_string();
    let wait = REQUEST_TIMEOUT * 4;

    let started = Instant::now();
    let claim = json!({"max": 1, "waitMs": wait.as_millis() as u64});
    let (status, v) = post(server.addr, "/worker/jobs/claim", &cred, &claim).await;
    eprintln!("claim long-poll answered after {:?}", started.elapsed());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["attempts"], json!([]), "{v}");

    let (status, v) =
        post(server.addr, "/api/v1/jobs", ADMIN, &json!({"steps": [{"name": "a", "run": "true"}]})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap();
    let started = Instant::now();
    let head = format!(
        "GET /api/v1/jobs/{id}/logs?waitMs={} HTTP/1.1\r\nAuthorization: Bearer {ADMIN}",
        wait.as_millis()
    );
    let (status, v) = exchange(server.addr, &head, b"", 0).await;
    eprintln!("log-follow long-poll answered after {:?}", started.elapsed());
    assert_eq!(status, 200, "{v}");
}

/// Reads until the server closes the connection (or `within` passes: `None`).
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

/// A client that starts a request and never finishes its headers is cut off after the
/// header read timeout (a slow-loris client cannot hold connections); one whose headers are
/// far too large is refused without the server reading them all.
#[tokio::test(flavor = "multi_thread")]
async fn slow_or_oversized_headers_do_not_hold_a_connection() {
    let server = start().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: a").await.unwrap();
    let closed = closed_within(&mut s, Duration::from_secs(30)).await;
    eprintln!("a connection with unfinished headers was closed after {:?}", started.elapsed());
    assert!(closed.is_some(), "still open after 30 s");
    assert!(started.elapsed() >= HEADER_TIMEOUT, "not before the timeout");

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    // The server may stop reading (and close) before all of it is written.
    let _ = s.write_all(huge.as_bytes()).await;
    let answer = closed_within(&mut s, Duration::from_secs(30)).await.expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text:.200}");
}

/// Every operation of the served OpenAPI document that takes a body refuses one a byte over
/// its limit with 413 in the JSON error shape, called with the credential its route needs
/// (so the limit, not the authentication, answers).
#[tokio::test(flavor = "multi_thread")]
async fn every_route_with_a_body_refuses_one_over_its_limit() {
    let server = start().await;
    let (status, reg) = post(
        server.addr,
        "/worker/register",
        JOIN,
        &json!({"protocolVersion": rota_domain::PROTOCOL_VERSION, "name": "big", "host": "h", "version": "t", "queues": ["default"], "concurrency": 1}),
    )
    .await;
    assert_eq!(status, 200, "{reg}");
    let credential = reg["credential"].as_str().unwrap().to_string();
    let (status, job) =
        post(server.addr, "/api/v1/jobs", ADMIN, &json!({"steps": [{"name": "a", "run": "true"}]})).await;
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let (_, doc) = exchange(server.addr, "GET /openapi.json HTTP/1.1", b"", 0).await;
    let defaults = ServerConfig::default();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("requestBody").is_none() {
                continue;
            }
            let token = match op["security"][0].as_object().and_then(|o| o.keys().next().cloned()).as_deref()
            {
                Some("admin") => ADMIN.to_string(),
                Some("join") => JOIN.to_string(),
                Some("worker") => credential.clone(),
                other => panic!("{method} {path}: unexpected security {other:?}"),
            };
            let large = ["/complete", "/logs", "/apply", "/jobs/batch"].iter().any(|s| path.contains(s));
            let limit = if large { defaults.log_body_limit } else { defaults.body_limit };
            let url = path
                .replace("{id}", &job_id)
                .replace("{name}", "x")
                .replace("{kind}", "join")
                .replace("{queue}", "default")
                .replace("{step}", "a");
            let body = format!("{{\"x\": \"{}\"}}", "a".repeat(limit));
            let head = format!("{} {url} HTTP/1.1\r\nAuthorization: Bearer {token}", method.to_uppercase());
            let (status, err) = exchange(server.addr, &head, body.as_bytes(), body.len()).await;
            assert_eq!(status, 413, "{method} {path}: {err}");
            assert_eq!(err["error"]["code"], "payload_too_large", "{method} {path}: {err}");
            checked += 1;
        }
    }
    eprintln!("{checked} operations with a body refuse one over their limit");
    assert!(checked >= 20, "only {checked} operations with a body");
}
