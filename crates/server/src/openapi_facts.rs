//! What the generated OpenAPI document cannot derive from the types: the limits of
//! `rota_domain::limits`, formats, patterns, enums, and every status a route returns (with
//! description and error body). Edits the JSON once; must state only what handlers enforce.

use rota_domain::limits as l;
use serde_json::{Map, Value, json};

/// Printable text: no control characters (what `limits::check_text` refuses).
const PRINTABLE: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$";
/// No NUL byte.
const NO_NUL: &str = "^[^\\u0000]*$";
/// An environment variable name: no `=`, no NUL.
const ENV_KEY: &str = "^[^=\\u0000]+$";

/// Job states as listings show them (`unschedulable` is derived: queued, and no live
/// worker can take it).
pub(crate) const JOB_DISPLAY_STATES: &[&str] =
    &["queued", "unschedulable", "running", "succeeded", "failed", "cancelled", "revoked"];

/// Applies every fact to `doc`.
pub(crate) fn complete(doc: &mut Value) {
    schema_limits(doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for op in item.values_mut() {
                operation(op);
            }
        }
    }
}

fn name_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": l::MAX_NAME, "pattern": l::NAME_PATTERN})
}

fn text_schema(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": PRINTABLE})
}

fn env_schema(description: &Value) -> Value {
    json!({
        "type": "object",
        "description": description,
        "maxProperties": l::MAX_ENV_VARS,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": l::MAX_ENV_KEY, "pattern": ENV_KEY},
        // KEY=VALUE and its NUL within the kernel's per-string limit.
        "additionalProperties": {"type": "string", "maxLength": l::MAX_ARG_STRLEN - 3, "pattern": NO_NUL},
    })
}

/// Merges `extra` into the property `prop` of component schema `schema` (keeping its
/// description and type unless `extra` sets them).
fn set(doc: &mut Value, schema: &str, prop: &str, extra: Value) {
    match doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{prop}")) {
        Some(target) => merge(target, extra),
        None => {
            // A renamed field must not silently lose its limits: tests run debug builds.
            tracing::error!(schema, prop, "openapi facts: no such property");
            debug_assert!(false, "openapi facts: no property {schema}.{prop}");
        }
    }
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}

fn items(doc: &mut Value, schema: &str, prop: &str, max_items: usize, item: Value) {
    set(doc, schema, prop, json!({"maxItems": max_items}));
    if let Some(target) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{prop}/items")) {
        merge(target, item);
    }
}

fn described_env(doc: &mut Value, schema: &str) {
    let p = format!("/components/schemas/{schema}/properties/env");
    let description = doc.pointer(&format!("{p}/description")).cloned().unwrap_or(Value::Null);
    if let Some(target) = doc.pointer_mut(&p) {
        *target = env_schema(&description);
    }
}

fn schema_limits(doc: &mut Value) {
    // The job document.
    set(doc, "JobSpec", "name", json!({"maxLength": l::MAX_JOB_NAME, "minLength": 1, "pattern": PRINTABLE}));
    set(doc, "JobSpec", "queue", name_schema());
    set(
        doc,
        "JobSpec",
        "idempotency_key",
        json!({"minLength": 1, "maxLength": l::MAX_IDEMPOTENCY_KEY, "pattern": PRINTABLE}),
    );
    set(doc, "JobSpec", "steps", json!({"minItems": 1, "maxItems": l::MAX_STEPS}));
    described_env(doc, "JobSpec");
    set(doc, "Target", "host", json!({"minLength": 1, "maxLength": l::MAX_HOST, "pattern": PRINTABLE}));
    items(doc, "Target", "tags", l::MAX_TAGS, text_schema(l::MAX_NAME));
    set(doc, "StepSpec", "name", name_schema());
    set(
        doc,
        "StepSpec",
        "run",
        json!({"minLength": 1, "maxLength": l::MAX_ARG_STRLEN - 1, "pattern": NO_NUL}),
    );
    items(doc, "StepSpec", "needs", l::MAX_STEPS, name_schema());
    described_env(doc, "StepSpec");
    set(doc, "StepSpec", "log_cap", json!({"minimum": 1}));
    set(doc, "RetryPolicy", "max_attempts", json!({"minimum": 1, "maximum": 100}));
    set(doc, "Backoff", "factor", json!({"minimum": 1, "maximum": 100}));
    set(doc, "Backoff", "jitter", json!({"minimum": 0, "maximum": 1}));

    // Operator bodies.
    items(doc, "BatchSubmitRequest", "jobs", l::MAX_BATCH_JOBS, json!({}));
    items(doc, "FleetRequest", "workers", l::MAX_ITEMS, text_schema(l::MAX_NAME));
    items(doc, "RevokeRequest", "jobs", l::MAX_ITEMS, json!({}));
    items(doc, "RevokeRequest", "keys", l::MAX_ITEMS, text_schema(l::MAX_IDEMPOTENCY_KEY));
    set(doc, "RevokeRequest", "signal", json!({"minimum": 1, "maximum": 64}));

    // Registration: only the major must match.
    set(doc, "RegisterRequest", "protocolVersion", json!({"example": rota_domain::PROTOCOL_VERSION}));
    set(doc, "RegisterRequest", "name", text_schema(l::MAX_NAME));
    set(doc, "RegisterRequest", "host", text_schema(l::MAX_HOST));
    set(doc, "RegisterRequest", "version", text_schema(l::MAX_SHORT_TEXT));
    set(
        doc,
        "RegisterRequest",
        "profile",
        json!({"minLength": 1, "maxLength": l::MAX_SHORT_TEXT, "pattern": PRINTABLE}),
    );
    set(
        doc,
        "RegisterRequest",
        "instanceId",
        json!({"minLength": 1, "maxLength": l::MAX_SHORT_TEXT, "pattern": PRINTABLE}),
    );
    items(doc, "RegisterRequest", "queues", l::MAX_QUEUES, name_schema());
    set(doc, "RegisterRequest", "queues", json!({"minItems": 1}));
    items(doc, "RegisterRequest", "tags", l::MAX_TAGS, text_schema(l::MAX_NAME));
    items(doc, "RegisterRequest", "capabilities", l::MAX_CAPABILITIES, text_schema(l::MAX_SHORT_TEXT));
    set(doc, "RegisterRequest", "concurrency", json!({"minimum": 1, "maximum": l::MAX_CONCURRENCY}));
    set(doc, "HeartbeatRequest", "attempts", json!({"maxItems": l::MAX_CONCURRENCY}));
    set(doc, "ControlRequest", "replies", json!({"maxItems": l::MAX_CONCURRENCY}));
    set(doc, "CompleteBatchRequest", "results", json!({"maxItems": l::MAX_CONCURRENCY}));
    set(doc, "LogsBatchRequest", "batches", json!({"maxItems": l::MAX_CONCURRENCY}));

    // Plain strings in replies that only take these values.
    set(doc, "JobSummary", "state", json!({"enum": JOB_DISPLAY_STATES}));
    set(doc, "NoReply", "why", json!({"enum": ["timeout", "stale", "offline", "unknown"]}));
    let job_states: Vec<&str> = rota_domain::JobState::ALL.iter().map(|s| s.as_str()).collect();
    let mut nullable: Vec<Value> = job_states.iter().map(|s| json!(s)).collect();
    nullable.push(Value::Null);
    set(doc, "RevokeResult", "state", json!({"enum": nullable}));
}

/// Statuses every operation can return beyond its own, with descriptions and error bodies.
fn operation(op: &mut Value) {
    let Some(op) = op.as_object_mut() else { return };
    let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let has_body = op.contains_key("requestBody");
    let params = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_params = params.iter().any(|p| matches!(p["in"].as_str(), Some("path" | "query")))
        || params.iter().any(|p| p["name"] == "Idempotency-Key");
    if let Some(ps) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in ps {
            parameter(p);
        }
    }
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    let mut add = |status: &str| {
        responses.entry(status.to_string()).or_insert_with(|| json!({}));
    };
    if secured {
        add("401");
        add("403");
        // Repeated authentication failures from the caller's address (`auth_limit.rs`).
        add("429");
        // Every secured route reads or writes the store.
        add("500");
    }
    if has_body {
        add("400");
        add("413");
    }
    if has_params {
        add("400");
    }
    for (status, response) in responses.iter_mut() {
        response_facts(status, response);
    }
}

fn parameter(p: &mut Value) {
    let name = p["name"].as_str().unwrap_or_default().to_string();
    let place = p["in"].as_str().unwrap_or_default().to_string();
    let schema = match (place.as_str(), name.as_str()) {
        ("path", "id") => json!({"type": "string", "format": "uuid"}),
        ("path", "queue") => name_schema(),
        ("query", "limit") => json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000}),
        ("query", "queue") => name_schema(),
        // A resource listing's cursor: the previous page's last name (opaque to clients).
        ("query", "continue") => name_schema(),
        ("query", "step") => name_schema(),
        ("query", "state") => json!({"type": "string", "maxLength": l::MAX_QUERY_TEXT}),
        ("query", "after") => json!({"type": "integer", "format": "int64", "minimum": 0}),
        ("header", "Idempotency-Key") => {
            json!({"type": "string", "minLength": 1, "maxLength": l::MAX_IDEMPOTENCY_KEY, "pattern": PRINTABLE})
        }
        _ => return,
    };
    if let Some(obj) = p.as_object_mut() {
        obj.insert("schema".into(), schema);
    }
}

fn response_facts(status: &str, response: &mut Value) {
    let Some(r) = response.as_object_mut() else { return };
    if !r.contains_key("description") {
        r.insert("description".into(), Value::String(describe(status).into()));
    }
    let is_error = !status.starts_with('2');
    if is_error && !r.contains_key("content") {
        let mut content = Map::new();
        content
            .insert("application/json".into(), json!({"schema": {"$ref": "#/components/schemas/ErrorBody"}}));
        r.insert("content".into(), Value::Object(content));
    }
}

fn describe(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "204" => "Done; no body",
        "400" => "Bad input: the message names the field (or parameter) and the limit",
        "401" => "No token, or not a token this server knows",
        "403" => "A valid token of the wrong kind for this route",
        "404" => "Not found",
        "409" => "Conflict: the caller does not hold the attempt, or the state forbids the change",
        "408" => "The request took longer than the server's request timeout; retry it",
        "413" => "The request body is larger than the server accepts",
        "429" => "Too many failed authentications from this address: retry after Retry-After seconds",
        "500" => "Internal error (the server logs the cause)",
        _ => "See the error body",
    }
}
