//! Property-based fuzzing of every route from the served OpenAPI document itself (fixed seed,
//! bounded cases per route) against a real server on port 0: every answer is a status the
//! document lists, never a 500, with a body matching the listed schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rota_server::ServerConfig;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rota_testkit::inproc::{ADMIN, JOIN};
/// Cases per operation: small enough for CI (the whole run takes seconds).
const CASES: usize = 40;
const SEED: u64 = 0x5eed_0a91;

/// The document and what requests need besides it.
struct World {
    doc: Value,
    credential: String,
    job_id: String,
    regexes: HashMap<String, regex::Regex>,
}

impl World {
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/components/schemas/");
            s = &self.doc["components"]["schemas"][name];
        }
        s
    }

    fn regex(&mut self, pattern: &str) -> regex::Regex {
        self.regexes
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).expect("the document's patterns compile"))
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// Generation

/// A value for `schema`; at each node, with probability `bad`, something that violates it.
fn generate(w: &World, schema: &Value, rng: &mut StdRng, bad: f64, depth: usize) -> Value {
    let s = w.resolve(schema);
    if rng.random_bool(bad) {
        return invalid(w, s, rng);
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[rng.random_range(0..e.len())].clone();
    }
    if let Some(ex) = s.get("example")
        && rng.random_bool(0.7)
    {
        return ex.clone();
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            if let Value::Object(o) = generate(w, part, rng, bad, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    if let Some(one) = s.get("oneOf").or_else(|| s.get("anyOf")).and_then(Value::as_array) {
        let pick = &one[rng.random_range(0..one.len())];
        return generate(w, pick, rng, bad, depth + 1);
    }
    let ty = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => {
            let non_null: Vec<&str> = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            if non_null.is_empty() || rng.random_bool(0.2) {
                return Value::Null;
            }
            non_null[rng.random_range(0..non_null.len())].to_string()
        }
        _ if s.get("properties").is_some() => "object".into(),
        _ => return json!({}),
    };
    match ty.as_str() {
        "string" => Value::String(string(w, s, rng)),
        "integer" => {
            let lo = s["minimum"].as_i64().unwrap_or(0);
            let hi = s["maximum"].as_i64().unwrap_or(lo + 1000).max(lo);
            json!(rng.random_range(lo..=hi.min(lo + 1000)))
        }
        "number" => {
            let lo = s["minimum"].as_f64().unwrap_or(0.0);
            let hi = s["maximum"].as_f64().unwrap_or(lo + 10.0).max(lo);
            json!(lo + (hi - lo) * rng.random::<f64>())
        }
        "boolean" => json!(rng.random_bool(0.5)),
        "array" => {
            let min = s["minItems"].as_u64().unwrap_or(0) as usize;
            let n = if depth > 5 { min } else { rng.random_range(min..=min + 2) };
            Value::Array((0..n).map(|_| generate(w, &s["items"], rng, bad, depth + 1)).collect())
        }
        "object" => {
            let mut o = Map::new();
            let required: Vec<&str> = s["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = s["properties"].as_object() {
                for (k, p) in props {
                    if required.contains(&k.as_str()) || (depth < 5 && rng.random_bool(0.5)) {
                        o.insert(k.clone(), generate(w, p, rng, bad, depth + 1));
                    }
                }
            }
            if let Some(extra) = s.get("additionalProperties").filter(|v| v.is_object())
                && depth < 5
            {
                for _ in 0..rng.random_range(0..3) {
                    let key = match s.get("propertyNames") {
                        Some(names) => string(w, names, rng),
                        None => format!("K{}", rng.random_range(0..100)),
                    };
                    o.insert(key, generate(w, extra, rng, bad, depth + 1));
                }
            }
            Value::Object(o)
        }
        _ => Value::Null,
    }
}

fn string(w: &World, s: &Value, rng: &mut StdRng) -> String {
    match s["format"].as_str() {
        Some("uuid") => {
            return if rng.random_bool(0.5) {
                w.job_id.clone()
            } else {
                rota_domain::JobId::new().to_string()
            };
        }
        Some("date-time") => return chrono::Utc::now().to_rfc3339(),
        Some("byte") => return "aGVsbG8=".into(),
        _ => {}
    }
    let min = s["minLength"].as_u64().unwrap_or(0) as usize;
    let max = s["maxLength"].as_u64().map_or(16, |m| m as usize).min(16).max(min);
    let n = rng.random_range(min.max(1)..=max.max(1));
    const SAFE: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";
    (0..n).map(|_| SAFE[rng.random_range(0..SAFE.len())] as char).collect()
}

/// Something `s` does not accept (or at least unusual input for it).
fn invalid(w: &World, s: &Value, rng: &mut StdRng) -> Value {
    let over = |n: Option<u64>| n.map_or(5000, |n| n as usize + 1);
    match rng.random_range(0..8) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!("x".repeat(over(s["maxLength"].as_u64()).min(300_000))),
        4 => json!("a\u{0}b\nc"),
        5 => Value::Array(vec![json!("x"); over(s["maxItems"].as_u64()).min(2000)]),
        6 => json!({"unexpectedProperty": true}),
        _ => json!(string(w, &json!({}), rng)),
    }
}

// ---------------------------------------------------------------------------------------
// Validation

fn validate(w: &mut World, v: &Value, schema: &Value, at: &str) -> Result<(), String> {
    let s = w.resolve(schema).clone();
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(w, v, part, at)?;
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let matching = one.iter().filter(|p| validate(w, v, p, at).is_ok()).count();
        if matching != 1 {
            return Err(format!("{at}: {matching} of the oneOf schemas match {v}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    let types: Vec<String> = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
        return Err(format!("{at}: {v} is not of type {types:?}"));
    }
    match v {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if s["maxLength"].as_u64().is_some_and(|m| chars > m)
                || s["minLength"].as_u64().is_some_and(|m| chars < m)
            {
                return Err(format!("{at}: length {chars} outside the schema's bounds"));
            }
            if let Some(p) = s["pattern"].as_str()
                && !w.regex(p).is_match(text)
            {
                return Err(format!("{at}: {text:?} does not match {p}"));
            }
            match s["format"].as_str() {
                Some("uuid") if uuid::Uuid::parse_str(text).is_err() => {
                    return Err(format!("{at}: {text:?} is not a uuid"));
                }
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                    return Err(format!("{at}: {text:?} is not a date-time"));
                }
                _ => {}
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if s["minimum"].as_f64().is_some_and(|m| x < m) || s["maximum"].as_f64().is_some_and(|m| x > m) {
                return Err(format!("{at}: {x} outside the schema's bounds"));
            }
        }
        Value::Array(items) => {
            if s["maxItems"].as_u64().is_some_and(|m| items.len() as u64 > m)
                || s["minItems"].as_u64().is_some_and(|m| (items.len() as u64) < m)
            {
                return Err(format!("{at}: {} items outside the schema's bounds", items.len()));
            }
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(w, x, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::Object(o) => {
            if let Some(req) = s["required"].as_array() {
                for r in req.iter().filter_map(Value::as_str) {
                    if !o.contains_key(r) {
                        return Err(format!("{at}: required property {r} is missing"));
                    }
                }
            }
            let props = s["properties"].as_object().cloned().unwrap_or_default();
            for (k, x) in o {
                match props.get(k) {
                    Some(p) => validate(w, x, p, &format!("{at}.{k}"))?,
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) if s.get("allOf").is_none() => {
                            return Err(format!("{at}: unexpected property {k}"));
                        }
                        Some(extra @ Value::Object(_)) => validate(w, x, extra, &format!("{at}.{k}"))?,
                        _ => {}
                    },
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------
// Requests

/// One generated request.
struct Case {
    method: reqwest::Method,
    url: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

fn token_for(w: &World, op: &Value, rng: &mut StdRng) -> Option<String> {
    let scheme = op["security"][0].as_object().and_then(|m| m.keys().next().cloned());
    let right = match scheme.as_deref() {
        Some("admin") => ADMIN.to_string(),
        Some("join") => JOIN.to_string(),
        Some("worker") => w.credential.clone(),
        _ => return None,
    };
    match rng.random_range(0..20) {
        0 => None,
        1 => Some("not-a-token".into()),
        2 => Some(if right == ADMIN { JOIN.into() } else { ADMIN.into() }),
        _ => Some(right),
    }
}

fn param_value(w: &World, p: &Value, rng: &mut StdRng) -> String {
    if rng.random_bool(0.15) {
        return ["-1", "abc", "", "%00", "x".repeat(300).as_str(), "99999999999999999999"]
            [rng.random_range(0..6)]
        .to_string();
    }
    match generate(w, &p["schema"], rng, 0.0, 0) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn build(w: &World, base: &str, path: &str, method: &str, op: &Value, rng: &mut StdRng) -> Case {
    let mut url_path = path.to_string();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    for p in op["parameters"].as_array().cloned().unwrap_or_default() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        match p["in"].as_str() {
            Some("path") => {
                let v = if name == "id" && rng.random_bool(0.6) {
                    w.job_id.clone()
                } else {
                    param_value(w, &p, rng)
                };
                let v = if v.is_empty() { "x".to_string() } else { v };
                url_path = url_path.replace(&format!("{{{name}}}"), &encode(&v));
            }
            Some("query") if rng.random_bool(0.5) => {
                query.push(format!("{name}={}", encode(&param_value(w, &p, rng))))
            }
            Some("header") if rng.random_bool(0.4) => {
                let v = param_value(w, &p, rng);
                if !v.is_empty() && v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    headers.push((name, v));
                }
            }
            _ => {}
        }
    }
    let body = op["requestBody"]["content"]["application/json"]["schema"].as_object().map(|_| {
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        match rng.random_range(0..20) {
            0 => "{not json".to_string(),
            1 => "[]".to_string(),
            2..=11 => generate(w, schema, rng, 0.0, 0).to_string(),
            _ => generate(w, schema, rng, 0.08, 0).to_string(),
        }
    });
    let mut url = format!("{base}{url_path}");
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    Case { method: method.to_uppercase().parse().unwrap(), url, token: token_for(w, op, rng), headers, body }
}

async fn send(http: &reqwest::Client, c: &Case) -> (u16, String, String) {
    let mut req = http.request(c.method.clone(), &c.url);
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    if let Some(b) = &c.body {
        req = req.header("content-type", "application/json").body(b.clone());
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let ctype =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, ctype, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_only_documented_statuses_with_matching_bodies() {
    let dir = tempfile::tempdir().unwrap();
    // Short long-polls: generated waits must not turn seconds into minutes.
    // Wrong tokens are part of the fuzzing: not slowed here (`auth_limit.rs` has its tests).
    let config = ServerConfig {
        max_poll: Duration::from_millis(100),
        auth_failures_per_minute: u32::MAX,
        ..ServerConfig::default()
    };
    let server = rota_testkit::inproc::Server::start_with(&dir.path().join("rota.db"), None, config).await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let doc: Value = http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    let post = |path: &str, token: &str, body: Value| {
        let req = http.post(format!("{base}{path}")).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let reg = post(
        "/worker/register",
        JOIN,
        json!({"protocolVersion": rota_domain::PROTOCOL_VERSION, "name": "fuzz", "host": "h", "version": "t", "queues": ["default"], "concurrency": 2}),
    )
    .await;
    let sub = post("/api/v1/jobs", ADMIN, json!({"steps": [{"name": "a", "run": "true"}]})).await;
    let mut w = World {
        doc: doc.clone(),
        credential: reg["credential"].as_str().unwrap().to_string(),
        job_id: sub["id"].as_str().unwrap().to_string(),
        regexes: HashMap::new(),
    };
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    // Unregistering ends the session the other worker routes use: last.
    ops.sort_by_key(|(p, _, _)| p == "/worker/unregister");
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut seen: HashMap<String, Vec<u16>> = HashMap::new();
    for (path, method, op) in &ops {
        let mut rng = StdRng::seed_from_u64(SEED ^ fxhash(&format!("{method} {path}")));
        let listed: Vec<String> = op["responses"].as_object().unwrap().keys().cloned().collect();
        for _ in 0..CASES {
            let case = build(&w, &base, path, method, op, &mut rng);
            let (status, ctype, text) = send(&http, &case).await;
            seen.entry(format!("{method} {path}")).or_default().push(status);
            let what = format!("{} {} (body {:.200?})", case.method, case.url, case.body);
            if status == 500 {
                failures.push(format!("{what} → 500: {text:.300}"));
                continue;
            }
            if !listed.contains(&status.to_string()) {
                failures.push(format!("{what} → {status}, not listed ({listed:?}): {text:.300}"));
                continue;
            }
            let schema = op["responses"][status.to_string()]["content"]["application/json"]["schema"].clone();
            if schema.is_null() || !ctype.starts_with("application/json") {
                continue;
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(body) => {
                    if let Err(e) = validate(&mut w, &body, &schema, "body") {
                        failures.push(format!("{what} → {status}: body does not match its schema: {e}"));
                    }
                }
                Err(e) => failures.push(format!("{what} → {status}: body is not JSON ({e}): {text:.200}")),
            }
        }
    }
    let elapsed = started.elapsed();
    let mut summary: Vec<String> = seen
        .iter()
        .map(|(k, v)| {
            let mut s = v.clone();
            s.sort_unstable();
            s.dedup();
            format!("{k}: {s:?}")
        })
        .collect();
    summary.sort();
    eprintln!(
        "fuzzed {} operations × {CASES} cases in {elapsed:?}; statuses seen:\n  {}",
        ops.len(),
        summary.join("\n  ")
    );
    server.shut().await;
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// A stable hash (std's is randomly seeded per process).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
