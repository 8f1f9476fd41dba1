//! Jobs through the `rota` CLI of an [`Env`]: submit, show, wait for a state, and JSON
//! made comparable across runs (volatile values redacted).

use crate::{Env, bound, rota};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `rota job submit --json ARGS...`; returns the job id.
pub fn submit(env: &Env, args: &[&str]) -> String {
    let out = rota(env).args(["job", "submit", "--json"]).args(args).output().expect("rota job submit");
    assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("submit --json prints JSON");
    v["id"].as_str().expect("id").to_string()
}

/// `rota job show ID --json`.
pub fn show_json(env: &Env, id: &str) -> Value {
    let out = rota(env).args(["job", "show", id, "--json"]).output().expect("rota job show");
    assert!(out.status.success(), "show failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
}

/// Polls `rota job show --json` until the job's state is one of `states`.
pub fn wait_for_state(env: &Env, id: &str, states: &[&str], within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let job = show_json(env, id);
        let state = job["state"].as_str().unwrap_or_default().to_string();
        if states.contains(&state.as_str()) {
            return job;
        }
        if start.elapsed() > within {
            panic!(
                "job {id} is {state}, wanted one of {states:?} within {within:?}\n{job:#}\nserver:\n{}",
                env.server_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the job is terminal (succeeded, failed, cancelled, revoked).
pub fn wait_for_end(env: &Env, id: &str) -> Value {
    wait_for_state(env, id, &["succeeded", "failed", "cancelled", "revoked"], bound())
}

/// Replaces values that change from run to run (ids, times, pids) with placeholders, so
/// JSON output can be snapshot-tested. A pid may or may not be reported yet, so it is
/// replaced even when null.
pub fn redact(v: &mut Value) {
    const VOLATILE: &[&str] = &[
        "id",
        "attemptId",
        "sessionId",
        "createdAt",
        "finishedAt",
        "startedAt",
        "runAfter",
        "deadline",
        "lastHeartbeatAt",
        "registeredAt",
        // Declared resources (`rota get -o json`).
        "creationTimestamp",
        "lastTransitionTime",
        // `rota job submit` sends a fresh UUID v7 of its own when the user gives none.
        "idempotency_key",
    ];
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "pid" || (VOLATILE.contains(&k.as_str()) && !val.is_null()) {
                    *val = Value::String(format!("[{k}]"));
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A YAML single-quoted scalar holding `s` exactly (for `run:` lines in job documents).
pub fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
