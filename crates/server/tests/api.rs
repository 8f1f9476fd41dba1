//! The HTTP contract against a real SQLite store: authentication (401/403), fencing (409),
//! repeated completions, bad input (400/413), idempotent submits, the protocol version
//! check and the generated OpenAPI document.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rota_server::ServerConfig;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const ADMIN: &str = "admin-secret";
const JOIN: &str = "join-secret";

struct Api {
    app: Router,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Self {
        Self::with_config(ServerConfig::default())
    }

    fn with_config(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap();
        let config = ServerConfig { admin_token: ADMIN.into(), join_token: JOIN.into(), ..config };
        Self { app: rota_server::router(Arc::new(store), config), _dir: dir }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let raw = body.map(|b| b.to_string());
        self.call_raw(method, path, token, raw, &[]).await
    }

    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn register(&self, name: &str) -> (String, Value) {
        let (s, v) = self
            .call(
                "POST",
                "/worker/register",
                Some(JOIN),
                Some(json!({"protocolVersion": 1, "name": name, "host": "h", "version": "t", "queues": ["default"], "concurrency": 2})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (v["credential"].as_str().unwrap().to_string(), v)
    }

    async fn submit(&self, run: &str) -> String {
        let (s, v) = self
            .call("POST", "/api/v1/jobs", Some(ADMIN), Some(json!({"steps": [{"name": "a", "run": run}]})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn tokens_are_checked_by_kind() {
    let api = Api::new();
    let (cred, _) = api.register("w1").await;
    assert_eq!(api.call("GET", "/api/v1/jobs", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/api/v1/jobs", Some("nope"), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call("GET", "/api/v1/jobs", Some(&cred), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call("GET", "/api/v1/jobs", Some(JOIN), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(api.call("GET", "/api/v1/jobs", Some(ADMIN), None).await.0, StatusCode::OK);
    let hb = json!({"attempts": []});
    assert_eq!(
        api.call("POST", "/worker/heartbeat", Some(ADMIN), Some(hb.clone())).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call("POST", "/worker/heartbeat", Some("nope"), Some(hb.clone())).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.call("POST", "/worker/heartbeat", Some(&cred), Some(hb)).await.0, StatusCode::OK);
    // Health needs no token and touches no store.
    let (s, v) = api.call("GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn superseded_session_loses_its_credential() {
    let api = Api::new();
    let (old, _) = api.register("same").await;
    let (_new, v) = api.register("same").await;
    assert!(v["superseded"].is_string(), "{v}");
    let (s, _) = api.call("POST", "/worker/heartbeat", Some(&old), Some(json!({"attempts": []}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn protocol_mismatch_names_both_versions() {
    let api = Api::new();
    let (s, v) = api
        .call(
            "POST",
            "/worker/register",
            Some(JOIN),
            Some(json!({"protocolVersion": 99, "name": "w", "host": "h", "version": "t", "queues": ["default"], "concurrency": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("99.0") && msg.contains("only the major version"), "{msg}");
    assert_eq!(v["error"]["code"], "protocol_mismatch");
}

#[tokio::test]
async fn a_different_protocol_minor_is_accepted() {
    // Servers and workers are upgraded one after the other: only the major must match, and
    // a worker from before minor versions (no protocolMinor, unknown fields) still joins.
    let api = Api::new();
    for body in [
        json!({"protocolVersion": 1, "protocolMinor": 99, "name": "w1", "host": "h", "version": "t", "queues": ["default"], "concurrency": 1, "someFutureField": true}),
        json!({"protocolVersion": 1, "name": "w2", "host": "h", "version": "t", "queues": ["default"], "concurrency": 1}),
    ] {
        let (s, v) = api.call("POST", "/worker/register", Some(JOIN), Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["protocolVersion"], 1);
        assert!(v["protocolMinor"].as_u64().is_some(), "{v}");
    }
}

/// Asserts a 400 in the JSON error shape whose message contains every one of `needles`.
fn assert_bad(s: StatusCode, v: &Value, needles: &[&str]) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in {msg:?}");
    }
    assert!(msg.len() < 1000, "the message must not echo huge input: {} bytes", msg.len());
}

#[tokio::test]
async fn input_over_a_limit_is_a_400_naming_the_field_and_the_limit() {
    let api = Api::new();
    let step = json!({"name": "a", "run": "true"});
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"name": "n".repeat(1 << 20), "steps": [step]}), vec!["name", "256"]),
        (json!({"name": "a\u{0}b", "steps": [step]}), vec!["name", "control character"]),
        (json!({"env": {"K".repeat(100 * 1024): "v"}, "steps": [step]}), vec!["env.KKK", "1024"]),
        (
            json!({"steps": [{"name": "a", "run": "true", "env": {"BIG": "x".repeat(128 * 1024)}}]}),
            vec!["steps[0].env.BIG", "131071"],
        ),
        (json!({"steps": [{"name": "a\u{0}", "run": "true"}]}), vec!["steps[0].name", "128"]),
        (json!({"queue": "q".repeat(129), "steps": [step]}), vec!["queue", "128"]),
        (
            json!({"target": {"tags": (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>()}, "steps": [step]}),
            vec!["target.tags", "64"],
        ),
        (json!({"target": {"host": "h".repeat(300)}, "steps": [step]}), vec!["target.host", "255"]),
    ];
    for (body, needles) in cases {
        let (s, v) = api.call("POST", "/api/v1/jobs", Some(ADMIN), Some(body)).await;
        assert_bad(s, &v, &needles);
    }
    // The total of env and script over the argument limit, each variable under 128 KiB.
    let env: serde_json::Map<String, Value> =
        (0..12).map(|i| (format!("V{i}"), json!("x".repeat(100_000)))).collect();
    let (s, v) =
        api.call("POST", "/api/v1/jobs", Some(ADMIN), Some(json!({"env": env, "steps": [step]}))).await;
    assert_bad(s, &v, &["steps[0]", &rota_domain::limits::MAX_EXEC_BYTES.to_string()]);
    // Operator and registration bodies.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/workers/control",
            Some(ADMIN),
            Some(json!({"command": "ping", "workers": ["w".repeat(200)]})),
        )
        .await;
    assert_bad(s, &v, &["workers[0]", "128"]);
    let (s, v) =
        api.call("POST", "/api/v1/revokes", Some(ADMIN), Some(json!({"keys": ["k".repeat(300)]}))).await;
    assert_bad(s, &v, &["keys[0]", "256"]);
    let (s, v) = api
        .call(
            "POST",
            "/worker/register",
            Some(JOIN),
            Some(json!({"protocolVersion": 1, "name": "w", "host": "h", "version": "t", "queues": ["default"], "tags": ["x".repeat(1 << 20)], "concurrency": 1})),
        )
        .await;
    assert_bad(s, &v, &["tags[0]", "128"]);
    let (s, v) =
        api.call("POST", &format!("/api/v1/queues/{}/pause", "q".repeat(200)), Some(ADMIN), None).await;
    assert_bad(s, &v, &["queue", "128"]);
}

#[tokio::test]
async fn query_string_errors_answer_in_the_json_error_shape() {
    let api = Api::new();
    for (q, needle) in
        [("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=5000", "1000")]
    {
        let (s, v) = api.call("GET", &format!("/api/v1/jobs?{q}"), Some(ADMIN), None).await;
        assert_bad(s, &v, &[needle]);
    }
    let id = api.submit("true").await;
    let (s, v) = api.call("GET", &format!("/api/v1/jobs/{id}/logs?after=x"), Some(ADMIN), None).await;
    assert_bad(s, &v, &["after"]);
    let (s, v) = api.call("GET", &format!("/api/v1/jobs/{id}/logs?waitMs=-5"), Some(ADMIN), None).await;
    assert_bad(s, &v, &["waitMs"]);
}

#[tokio::test]
async fn operator_bodies_refuse_unknown_properties() {
    let api = Api::new();
    let id = api.submit("true").await;
    for (path, body) in [
        ("/api/v1/revokes", json!({"jobs": [id], "terminat": true})),
        ("/api/v1/workers/control", json!({"command": "ping", "timeout": 5})),
        ("/api/v1/jobs/batch", json!({"jobs": [], "extra": 1})),
    ] {
        let (s, v) = api.call("POST", path, Some(ADMIN), Some(body)).await;
        assert_bad(s, &v, &["unknown field"]);
    }
}

#[tokio::test]
async fn a_revoke_of_an_id_never_issued_is_404_and_stores_nothing() {
    let api = Api::new();
    let known = api.submit("true").await;
    let never = uuid_v7();
    let (s, v) =
        api.call("POST", "/api/v1/revokes", Some(ADMIN), Some(json!({"jobs": [known, never]}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&never) && msg.contains("idempotency key"), "{msg}");
    let (_, v) = api.call("GET", "/api/v1/revokes", Some(ADMIN), None).await;
    assert_eq!(v["revokes"], json!([]), "nothing was revoked: {v}");
    let (_, v) = api.call("GET", &format!("/api/v1/jobs/{known}"), Some(ADMIN), None).await;
    assert_ne!(v["state"], "revoked");
}

#[tokio::test]
async fn fencing_and_repeated_complete() {
    let api = Api::new();
    let job = api.submit("true").await;
    let (w1, _) = api.register("w1").await;
    let (w2, _) = api.register("w2").await;
    let (s, v) = api.call("POST", "/worker/jobs/claim", Some(&w1), Some(json!({"max": 4}))).await;
    assert_eq!(s, StatusCode::OK);
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{v}");
    let attempt = attempts[0]["attemptId"].as_i64().unwrap();
    let path = format!("/worker/jobs/{job}/steps/a/complete");
    let body = json!({"attemptId": attempt, "outcome": {"status": "succeeded"}});

    // Someone else's attempt: 409, nothing changes.
    let (s, _) = api.call("POST", &path, Some(&w2), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{job}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], "running", "{shown}");
    let logs = json!({"attemptId": attempt, "step": "a", "chunks": [{"stream": "stdout", "seq": 0, "data": "aGk="}]});
    let (s, _) = api.call("POST", &format!("/worker/jobs/{job}/logs"), Some(&w2), Some(logs.clone())).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The holder: recorded once, and the repeat is answered with the recorded result.
    let (s, first) = api.call("POST", &path, Some(&w1), Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["repeated"], false);
    let (s, again) = api.call("POST", &path, Some(&w1), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["repeated"], true);
    assert_eq!(again["outcome"], first["outcome"]);
    // A different outcome for a recorded attempt is a conflict.
    let other = json!({"attemptId": attempt, "outcome": {"status": "failed", "exit_code": 1}});
    assert_eq!(api.call("POST", &path, Some(&w1), Some(other)).await.0, StatusCode::CONFLICT);
    // Logs for a finished attempt are refused too.
    let (s, _) = api.call("POST", &format!("/worker/jobs/{job}/logs"), Some(&w1), Some(logs)).await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{job}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert!(shown["reason"].is_string());
}

#[tokio::test]
async fn bad_input_is_named() {
    let api = Api::new();
    let (s, v) = api.call_raw("POST", "/api/v1/jobs", Some(ADMIN), Some("{\"steps\": [".into()), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("malformed JSON"), "{v}");

    let (s, v) = api
        .call(
            "POST",
            "/api/v1/jobs",
            Some(ADMIN),
            Some(json!({"steps": [{"name": "a", "run": "x", "needs": ["zz"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("steps[0].needs[0]"), "{v}");

    let (s, v) = api.call("POST", "/api/v1/jobs", Some(ADMIN), Some(json!({"steps": [], "bogus": 1}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("bogus"), "{v}");

    let huge = format!("{{\"steps\": [{{\"name\": \"a\", \"run\": \"{}\"}}]}}", "x".repeat(3 << 20));
    let (s, v) = api.call_raw("POST", "/api/v1/jobs", Some(ADMIN), Some(huge), &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

    let (s, _) = api.call("GET", &format!("/api/v1/jobs/{}", uuid_v7()), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A job id in a path that is not a UUID: 400 in the JSON error shape naming it, on the
/// operator routes and on the worker protocol alike.
#[tokio::test]
async fn a_bad_job_id_in_a_path_is_named_in_the_json_error_shape() {
    let api = Api::new();
    let (token, _) = api.register("w1").await;
    let cases = [
        ("GET", "/api/v1/jobs/not-a-uuid", ADMIN.to_string(), None),
        ("GET", "/api/v1/jobs/not-a-uuid/logs", ADMIN.to_string(), None),
        ("POST", "/api/v1/jobs/not-a-uuid/cancel", ADMIN.to_string(), None),
        ("POST", "/api/v1/jobs/not-a-uuid/retry", ADMIN.to_string(), None),
        (
            "POST",
            "/worker/jobs/not-a-uuid/logs",
            token.clone(),
            Some(json!({"attemptId": 1, "step": "a", "chunks": []})),
        ),
        (
            "POST",
            "/worker/jobs/not-a-uuid/steps/a/start",
            token.clone(),
            Some(json!({"attemptId": 1, "pid": 1})),
        ),
        (
            "POST",
            "/worker/jobs/not-a-uuid/steps/a/complete",
            token.clone(),
            Some(json!({"attemptId": 1, "outcome": {"status": "succeeded"}})),
        ),
    ];
    for (method, path, token, body) in cases {
        let (s, v) = api.call(method, path, Some(&token), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{method} {path}: {v}");
        assert_eq!(
            v["error"]["message"], "'not-a-uuid' is not a job id (expected a UUID)",
            "{method} {path}: {v}"
        );
    }
}

fn uuid_v7() -> String {
    rota_domain::JobId::new().to_string()
}

#[tokio::test]
async fn idempotency_key_yields_one_job() {
    let api = Api::new();
    let body = json!({"steps": [{"name": "a", "run": "true"}]}).to_string();
    let key = [("idempotency-key", "order-42")];
    let (s1, v1) = api.call_raw("POST", "/api/v1/jobs", Some(ADMIN), Some(body.clone()), &key).await;
    let (s2, v2) = api.call_raw("POST", "/api/v1/jobs", Some(ADMIN), Some(body), &key).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(v2["created"], false);
    let (_, list) = api.call("GET", "/api/v1/jobs", Some(ADMIN), None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn queued_job_without_workers_is_unschedulable() {
    let api = Api::new();
    let id = api.submit("true").await;
    let (_, v) = api.call("GET", &format!("/api/v1/jobs/{id}"), Some(ADMIN), None).await;
    assert_eq!(v["state"], "unschedulable", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("queue 'default'"));
    api.register("w1").await;
    let (_, v) = api.call("GET", &format!("/api/v1/jobs/{id}"), Some(ADMIN), None).await;
    assert_eq!(v["state"], "queued", "{v}");
    let (_, v) = api.call("GET", "/api/v1/jobs?state=unschedulable", Some(ADMIN), None).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn openapi_describes_every_endpoint() {
    let api = Api::new();
    let (s, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/worker/register",
        "/worker/heartbeat",
        "/worker/control",
        "/worker/jobs/claim",
        "/worker/jobs/{id}/steps/{step}/start",
        "/worker/jobs/{id}/steps/{step}/complete",
        "/worker/jobs/complete",
        "/worker/jobs/{id}/logs",
        "/worker/logs",
        "/worker/unregister",
        "/api/v1/jobs",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/retry",
        "/api/v1/workers",
        "/api/v1/workers/control",
        "/api/v1/revokes",
        "/api/v1/queues",
        "/api/v1/queues/{queue}/pause",
        "/api/v1/queues/{queue}/resume",
        "/api/v1/resources/apply",
        "/api/v1/resources/delete",
        "/api/v1/resources/{kind}",
        "/api/v1/resources/{kind}/{name}",
        "/api/v1/workflows/{name}/runs",
        "/healthz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "missing {p} in /openapi.json");
    }
    assert!(doc["components"]["schemas"]["JobSpec"].is_object());
}

#[tokio::test]
async fn revokes_are_durable_state_and_reach_later_workers() {
    let api = Api::new();
    let id = api.submit("true").await;
    let (s, v) = api.call("POST", "/api/v1/revokes", Some(ADMIN), Some(json!({"jobs": [id]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["state"], "revoked");
    let (w, reg) = api.register("late").await;
    assert_eq!(reg["revoked"], json!([id]), "a worker registering later holds the revoke");
    let (_, claimed) = api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 4}))).await;
    assert_eq!(claimed["attempts"].as_array().unwrap().len(), 0, "a revoked job never starts");
    let (_, list) = api.call("GET", "/api/v1/revokes", Some(ADMIN), None).await;
    assert_eq!(list["revokes"][0]["jobId"], json!(id));
    let (s, _) = api.call("POST", "/api/v1/revokes", Some(ADMIN), Some(json!({"jobs": []}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn paused_queue_holds_its_jobs_until_resumed() {
    let api = Api::new();
    let id = api.submit("true").await;
    let (w, _) = api.register("w1").await;
    let (s, v) = api.call("POST", "/api/v1/queues/default/pause", Some(ADMIN), None).await;
    assert_eq!((s, v["paused"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (_, claimed) = api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 4}))).await;
    assert_eq!(claimed["attempts"].as_array().unwrap().len(), 0);
    let (_, mut qs) = api.call("GET", "/api/v1/queues", Some(ADMIN), None).await;
    // When the oldest waiting job was submitted: its id's time, a moment ago.
    let since =
        qs["queues"][0].as_object_mut().unwrap().remove("oldestWaitingSince").expect("oldestWaitingSince");
    let since = chrono::DateTime::parse_from_rfc3339(since.as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - since.with_timezone(&chrono::Utc)).num_seconds().abs() < 60, "{since}");
    assert_eq!(
        qs["queues"],
        json!([{"namespace": "default", "queue": "default", "ready": 1, "running": 0, "paused": true}])
    );
    api.call("POST", "/api/v1/queues/default/resume", Some(ADMIN), None).await;
    let (_, claimed) = api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 4}))).await;
    assert_eq!(claimed["attempts"][0]["jobId"], json!(id));
    let (s, _) = api.call("POST", "/api/v1/queues/bad%20name/pause", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fleet_commands_collect_replies_and_name_the_silent() {
    let api = std::sync::Arc::new(Api::new());
    let (talker, _) = api.register("talker").await;
    let _ = api.register("silent").await;
    // The talker answers its control long-poll like a worker would.
    let a = api.clone();
    let answering = tokio::spawn(async move {
        let mut replies = json!([]);
        loop {
            let (_, v) = a
                .call(
                    "POST",
                    "/worker/control",
                    Some(&talker),
                    Some(json!({"waitMs": 2000, "replies": replies})),
                )
                .await;
            let cmds = v["commands"].as_array().cloned().unwrap_or_default();
            replies = json!(
                cmds.iter()
                    .map(|c| json!({"id": c["id"], "reply": {"type": "pong", "name": "talker", "host": "h"}}))
                    .collect::<Vec<_>>()
            );
        }
    });
    // How long the silent worker is waited for: the talker's answer must fit in it, on a
    // loaded machine too.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/workers/control",
            Some(ADMIN),
            Some(json!({"command": "ping", "timeoutMs": 5000})),
        )
        .await;
    answering.abort();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["replies"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["replies"][0]["worker"], "talker");
    assert_eq!(v["replies"][0]["reply"]["type"], "pong");
    assert_eq!(v["noReply"], json!([{"worker": "silent", "why": "timeout"}]));
    let (_, v) = api
        .call(
            "POST",
            "/api/v1/workers/control",
            Some(ADMIN),
            Some(json!({"command": "ping", "workers": ["nobody"], "timeoutMs": 100})),
        )
        .await;
    assert_eq!(v["noReply"], json!([{"worker": "nobody", "why": "unknown"}]));
    let (s, _) =
        api.call("POST", "/api/v1/workers/control", Some(ADMIN), Some(json!({"command": "shutdown"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "shutdown needs a mode");
}

/// The metrics text's value of `name`.
async fn metric(api: &Api, name: &str) -> u64 {
    let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[tokio::test]
async fn a_waiting_claim_gets_the_step_from_the_submit_that_made_it() {
    let api = Arc::new(Api::new());
    let (w, _) = api.register("w1").await;
    // The claim must be parked before the submit; a loaded machine may be slow to get it
    // there, so a round where the submit came first (the normal wake-up path) is repeated.
    for round in 1..=5 {
        let poll = {
            let (api, w) = (api.clone(), w.clone());
            tokio::spawn(async move {
                api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 2, "waitMs": 10_000})))
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300 * round)).await;
        let job = api.submit("true").await;
        let (s, v) = poll.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["attempts"][0]["jobId"], json!(job), "the waiting worker gets the new job: {v}");
        let attempt = v["attempts"][0]["attemptId"].as_i64().unwrap();
        let done = json!({"attemptId": attempt, "outcome": {"status": "succeeded"}});
        let (s, _) =
            api.call("POST", &format!("/worker/jobs/{job}/steps/a/complete"), Some(&w), Some(done)).await;
        assert_eq!(s, StatusCode::OK, "the handed-over attempt is held by the claimer");
        if metric(&api, "rota_attempts_handed_at_submit_total").await == 1 {
            assert_eq!(metric(&api, "rota_attempts_claimed_total").await, round);
            return;
        }
    }
    panic!("in five rounds the submit never claimed for the parked long-poll");
}

/// `POST /worker/register` of `name` on `host` as `instance` (none: an older worker).
async fn register_as(
    api: &Api,
    name: &str,
    host: &str,
    instance: Option<&str>,
    replace: bool,
) -> (StatusCode, Value) {
    let mut body = json!({"protocolVersion": 1, "name": name, "host": host, "version": "t",
        "queues": ["default"], "concurrency": 2, "replace": replace});
    if let Some(i) = instance {
        body["instanceId"] = json!(i);
    }
    api.call("POST", "/worker/register", Some(JOIN), Some(body)).await
}

async fn heartbeat_status(api: &Api, credential: &str) -> StatusCode {
    api.call("POST", "/worker/heartbeat", Some(credential), Some(json!({"attempts": []}))).await.0
}

#[tokio::test]
async fn a_live_name_is_refused_to_another_instance_until_it_is_replaced() {
    let api = Api::new();
    let (s, first) = register_as(&api, "vm", "h1", Some("inst-a"), false).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let a = first["credential"].as_str().unwrap().to_string();

    // Another instance, while the holder is live: 409 name_held naming the holder.
    let (s, v) = register_as(&api, "vm", "h2", Some("inst-b"), false).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], json!("name_held"), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    for want in [
        "worker name \"vm\" is held by a live worker on host h1",
        "instance inst-a",
        "last heartbeat ",
        "s ago",
        "pick another --name",
        "--replace",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    assert_eq!(heartbeat_status(&api, &a).await, StatusCode::OK, "the holder keeps its session");

    // The same instance and host (a restart): supersedes, as before.
    let (s, restart) = register_as(&api, "vm", "h1", Some("inst-a"), false).await;
    assert_eq!(s, StatusCode::OK, "{restart}");
    assert_eq!(restart["superseded"], first["sessionId"]);
    assert_eq!(heartbeat_status(&api, &a).await, StatusCode::UNAUTHORIZED);

    // --replace takes it on purpose; the replaced instance cannot take it back.
    let (s, replaced) = register_as(&api, "vm", "h2", Some("inst-b"), true).await;
    assert_eq!(s, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["superseded"], restart["sessionId"]);
    let (s, v) = register_as(&api, "vm", "h1", Some("inst-a"), false).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("name_held")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("on host h2 (instance inst-b"), "{v}");
    let (s, v) = api.call("GET", "/api/v1/workers", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK);
    let vm = v["workers"].as_array().unwrap().iter().find(|w| w["name"] == "vm").unwrap().clone();
    assert_eq!((vm["host"].as_str(), vm["instanceId"].as_str()), (Some("h2"), Some("inst-b")), "{vm}");

    // Workers too old to send an instance id supersede as before.
    let (s, v) = register_as(&api, "vm", "h3", None, false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["superseded"], replaced["sessionId"]);

    // A blank or oversized instance id is bad input.
    for bad in ["", " ", &"x".repeat(200)] {
        let (s, v) = register_as(&api, "other", "h1", Some(bad), false).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("instanceId"), "{v}");
    }
}

/// A claim long-poll (20 s) of worker credential `w`, parked in the background.
fn park_claim(api: &Arc<Api>, w: &str) -> tokio::task::JoinHandle<(StatusCode, serde_json::Value)> {
    let (api, w) = (api.clone(), w.to_string());
    tokio::spawn(async move {
        api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 1, "waitMs": 20_000}))).await
    })
}

fn fast_heartbeats() -> ServerConfig {
    // Heard from lately = within 1.5 heartbeat intervals = 300 ms.
    ServerConfig { heartbeat_interval: std::time::Duration::from_millis(200), ..ServerConfig::default() }
}

#[tokio::test]
async fn a_parked_claim_of_a_session_not_heard_from_gets_no_work() {
    let api = Arc::new(Api::with_config(fast_heartbeats()));
    let (silent, _) = api.register("silent").await;
    let poll = park_claim(&api, &silent);
    // No heartbeat for well over 1.5 intervals: its link is as good as cut.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let job = api.submit("true").await;
    let (s, v) = tokio::time::timeout(std::time::Duration::from_secs(15), poll).await.unwrap().unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attempts"], json!([]), "a silent session's parked claim takes nothing: {v}");
    assert_eq!(metric(&api, "rota_attempts_handed_at_submit_total").await, 0);
    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{job}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], json!("queued"), "the step stays ready for live workers: {shown}");

    // A live worker gets it; so does the silent one once it claims again (a new claim
    // counts as heard from).
    let (live, _) = api.register("live").await;
    let (s, v) =
        api.call("POST", "/worker/jobs/claim", Some(&live), Some(json!({"max": 1, "waitMs": 0}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attempts"][0]["jobId"], json!(job), "{v}");
    let other = api.submit("true").await;
    let (s, v) =
        api.call("POST", "/worker/jobs/claim", Some(&silent), Some(json!({"max": 1, "waitMs": 0}))).await;
    assert_eq!((s, v["attempts"][0]["jobId"].clone()), (StatusCode::OK, json!(other)), "{v}");
}

#[tokio::test]
async fn a_parked_claim_of_a_heartbeating_session_keeps_getting_work() {
    let api = Arc::new(Api::with_config(fast_heartbeats()));
    let (w, _) = api.register("beating").await;
    let poll = park_claim(&api, &w);
    // Parked well past the window from its arrival, but heartbeating all along.
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(heartbeat_status(&api, &w).await, StatusCode::OK);
    }
    let job = api.submit("true").await;
    let (s, v) = tokio::time::timeout(std::time::Duration::from_secs(15), poll).await.unwrap().unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["attempts"][0]["jobId"], json!(job), "{v}");
}

fn workflow(name: &str, run_b: &str) -> Value {
    json!({
        "apiVersion": "rota/v1",
        "kind": "Workflow",
        "metadata": {"name": name, "labels": {"team": "ops"}},
        "spec": {
            "inputs": {"who": {"type": "string"}, "count": {"type": "integer", "default": 2}},
            "steps": [
                {"name": "a", "run": "echo GREETING=hi >> $ROTA_OUTPUT"},
                {"name": "b", "run": run_b, "needs": ["a"]}
            ]
        }
    })
}

/// Declared resources: an apply answers per document (created, unchanged, configured with
/// the generation rising only for a spec change), is all or nothing with the field to
/// blame as a JSON pointer, a dry run stores nothing, and a workflow runs as a job with
/// its inputs typed.
#[tokio::test]
async fn resources_apply_get_run_and_delete() {
    let api = Api::new();
    let apply = |docs: Vec<Value>, dry: bool| {
        let body = json!({"documents": docs, "dryRun": dry});
        let api = &api;
        async move { api.call("POST", "/api/v1/resources/apply", Some(ADMIN), Some(body)).await }
    };
    let (s, v) = apply(vec![workflow("w1", "echo b"), workflow("w2", "echo b")], false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["action"], "created");
    assert_eq!(v["results"][1]["generation"], 1);
    let (_, v) = apply(vec![workflow("w1", "echo b"), workflow("w2", "echo b")], false).await;
    assert_eq!(
        (v["results"][0]["action"].as_str(), v["results"][1]["action"].as_str()),
        (Some("unchanged"), Some("unchanged"))
    );

    // A dry run says what would change and changes nothing.
    let (_, v) = apply(vec![workflow("w1", "echo changed")], true).await;
    assert_eq!(
        (v["results"][0]["action"].as_str(), v["results"][0]["generation"].as_u64()),
        (Some("configured"), Some(2))
    );
    assert_eq!(v["results"][0]["previous"]["steps"][1]["run"], "echo b");
    let (_, got) = api.call("GET", "/api/v1/resources/workflows/w1", Some(ADMIN), None).await;
    assert_eq!((got["metadata"]["generation"].as_u64(), got["kind"].as_str()), (Some(1), Some("Workflow")));

    // One bad document refuses the whole apply, naming the field.
    let mut bad = workflow("w3", "echo b");
    bad["spec"]["steps"][1]["needs"] = json!(["nope"]);
    let (s, v) = apply(vec![workflow("w1", "echo changed"), bad], false).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["pointer"], "/documents/1/spec/steps/1/needs/0", "{v}");
    let (s, _) = api.call("GET", "/api/v1/resources/wf/w3", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing of the refused apply stored");
    let (_, got) = api.call("GET", "/api/v1/resources/Workflow/w1", Some(ADMIN), None).await;
    assert_eq!(got["metadata"]["generation"], 1, "w1 untouched by the refused apply");

    // The real change moves only w1's generation.
    let (_, v) = apply(vec![workflow("w1", "echo changed"), workflow("w2", "echo b")], false).await;
    assert_eq!(
        (v["results"][0]["generation"].as_u64(), v["results"][1]["generation"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, list) = api.call("GET", "/api/v1/resources/workflows", Some(ADMIN), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // A run types its inputs; a wrong one is named.
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/workflows/w1/runs",
            Some(ADMIN),
            Some(json!({"inputs": {"count": "x", "who": "a"}})),
        )
        .await;
    assert_eq!((s, v["error"]["pointer"].as_str()), (StatusCode::BAD_REQUEST, Some("/inputs/count")), "{v}");
    let (s, v) = api
        .call("POST", "/api/v1/workflows/w1/runs", Some(ADMIN), Some(json!({"inputs": {"who": "ada"}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, job) =
        api.call("GET", &format!("/api/v1/jobs/{}", v["id"].as_str().unwrap()), Some(ADMIN), None).await;
    assert_eq!(job["spec"]["env"]["ROTA_INPUT_WHO"], "ada", "{job}");
    assert_eq!(job["spec"]["env"]["ROTA_INPUT_COUNT"], "2", "{job}");
    let (s, _) = api.call("POST", "/api/v1/workflows/nope/runs", Some(ADMIN), Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Deletes.
    let (s, _) = api.call("DELETE", "/api/v1/resources/wf/w2", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call("DELETE", "/api/v1/resources/wf/w2", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let body = json!({"resources": [{"kind": "wf", "name": "w1"}, {"kind": "wf", "name": "w2"}]});
    let (_, v) = api.call("POST", "/api/v1/resources/delete", Some(ADMIN), Some(body)).await;
    assert_eq!(
        (v["results"][0]["deleted"].as_bool(), v["results"][1]["deleted"].as_bool()),
        (Some(true), Some(false))
    );
    let (s, _) = api.call("GET", "/api/v1/resources/pods", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "unknown kind");
}

/// Resource listings come in pages as Kubernetes lists: at most `limit` (default 500, at
/// most 1000), a `continue` token while more remain and none on the last page; a limit out
/// of range or a token no listing gave is a 400 saying which; the document lists both
/// parameters.
#[tokio::test]
async fn resource_listings_are_paged() {
    let api = Api::new();
    let docs: Vec<Value> = ["e", "B", "a", "d", "c"].iter().map(|n| workflow(n, "true")).collect();
    let (s, v) =
        api.call("POST", "/api/v1/resources/apply", Some(ADMIN), Some(json!({"documents": docs}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().into())
            .collect()
    };

    let (s, all) = api.call("GET", "/api/v1/resources/workflows", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(names(&all), ["B", "a", "c", "d", "e"], "byte order");
    assert!(all.get("continue").is_none(), "one page holds them all: {all}");

    let mut pages = Vec::new();
    let mut url = "/api/v1/resources/wf?limit=2".to_string();
    loop {
        let (s, page) = api.call("GET", &url, Some(ADMIN), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages.push(names(&page));
        match page["continue"].as_str() {
            Some(token) => url = format!("/api/v1/resources/wf?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["B", "a"], vec!["c", "d"], vec!["e"]]);
    // Exactly a page's worth left: the last full page still says so, the next is empty.
    let (_, page) =
        api.call("GET", "/api/v1/resources/wf?limit=3&continue=default/B", Some(ADMIN), None).await;
    assert_eq!(
        (names(&page), page.get("continue")),
        (vec!["a".to_string(), "c".into(), "d".into()], Some(&json!("default/d")))
    );
    let (_, page) =
        api.call("GET", "/api/v1/resources/wf?limit=1000&continue=default/e", Some(ADMIN), None).await;
    assert_eq!(page, json!({"items": []}));

    for (query, says) in [
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("continue=%2Fetc", "continue: not a token a listing returned"),
        ("continue=B", "continue: not a token a listing returned"),
    ] {
        let (s, v) = api.call("GET", &format!("/api/v1/resources/wf?{query}"), Some(ADMIN), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{query}: {v}");
    }
    let (s, _) = api.call("GET", "/api/v1/resources/wf?limit=ten", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    let params = doc["paths"]["/api/v1/resources/{kind}"]["get"]["parameters"].as_array().unwrap().clone();
    let schema_of = |name: &str| params.iter().find(|p| p["name"] == name).map(|p| p["schema"].clone());
    assert_eq!(schema_of("limit").unwrap()["maximum"], 1000, "{params:?}");
    assert_eq!(schema_of("continue").unwrap()["type"], "string", "{params:?}");
    assert!(doc["components"]["schemas"]["ResourceList"]["properties"]["continue"].is_object());
}

#[tokio::test]
async fn a_batch_completion_claims_for_the_slots_it_frees_when_asked() {
    let api = Api::new();
    let (w, _) = api.register("w1").await;
    let first = api.submit("true").await;
    let (_, v) = api.call("POST", "/worker/jobs/claim", Some(&w), Some(json!({"max": 1}))).await;
    let attempt = v["attempts"][0]["attemptId"].as_i64().unwrap();
    let (second, third) = (api.submit("true").await, api.submit("true").await);
    let item = |job: &str, attempt: i64| json!({"jobId": job, "step": "a", "attemptId": attempt, "outcome": {"status": "succeeded"}});

    // `claim` asks for at most one step per result: the next oldest comes back, leased.
    let body = json!({"results": [item(&first, attempt)], "claim": 5});
    let (s, v) = api.call("POST", "/worker/jobs/complete", Some(&w), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["status"], 200, "{v}");
    let claimed = v["claimed"].as_array().unwrap();
    assert_eq!(claimed.len(), 1, "one per result: {v}");
    assert_eq!(claimed[0]["jobId"], json!(second));
    let attempt = claimed[0]["attemptId"].as_i64().unwrap();
    assert_eq!(metric(&api, "rota_attempts_claimed_at_completion_total").await, 1);
    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{second}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], "running", "{shown}");

    // Without `claim` (older workers), nothing is claimed and the reply has no `claimed`.
    let body = json!({"results": [item(&second, attempt)]});
    let (s, v) = api.call("POST", "/worker/jobs/complete", Some(&w), Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("claimed").is_none(), "{v}");
    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{third}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], "queued", "{shown}");

    // A paused queue gives nothing; a refused result still lets the claim run.
    api.call("POST", "/api/v1/queues/default/pause", Some(ADMIN), None).await;
    let body = json!({"results": [item(&second, attempt)], "claim": 1});
    let (_, v) = api.call("POST", "/worker/jobs/complete", Some(&w), Some(body.clone())).await;
    assert_eq!(v["results"][0]["status"], 200, "a repeat: {v}");
    assert!(v.get("claimed").is_none(), "paused: {v}");
    api.call("POST", "/api/v1/queues/default/resume", Some(ADMIN), None).await;
    api.register("w1").await;
    let (s, _) = api.call("POST", "/worker/jobs/complete", Some(&w), Some(body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a superseded session claims nothing: it is refused");
    let (_, shown) = api.call("GET", &format!("/api/v1/jobs/{third}"), Some(ADMIN), None).await;
    assert_eq!(shown["state"], "queued", "{shown}");
    assert_eq!(metric(&api, "rota_attempts_claimed_at_completion_total").await, 1);
}
