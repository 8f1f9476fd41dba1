//! The documented `--json` / `-o json` shapes of the declarative commands as snapshots
//! (issue 13: "the `-o json` shapes are snapshot-tested"): `rota apply`, `diff`, `get`
//! (one and a list), `delete` and `run`. Ids and times are redacted by the kit's `redact`;
//! names are the test's own. SQLite only: the shapes are the server's and the CLI's, not a
//! backend's (declarative.rs runs the behaviour on both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::{Env, redact, rota, spawn_server};
use serde_json::Value;

/// Two workflows: `greet` with labels, typed inputs (one defaulted), a target, env and two
/// steps; `tiny` with one step. `b_run` is greet's second step.
fn docs(env: &Env, b_run: &str) -> String {
    let text = format!(
        "apiVersion: rota/v1\nkind: Workflow\nmetadata:\n  name: greet\n  labels: {{team: ops}}\nspec:\n  inputs:\n    who: {{type: string, description: whom to greet}}\n    count: {{type: integer, default: 2}}\n  target: {{queue: default}}\n  env: {{GREETING: hello}}\n  steps:\n    - name: a\n      run: echo \"$GREETING $ROTA_INPUT_WHO\"\n      timeout: 30s\n    - name: b\n      run: {b_run}\n      needs: [a]\n---\nkind: Workflow\nmetadata: {{name: tiny}}\nspec:\n  steps: [{{name: s, run: 'true'}}]\n"
    );
    let path = env.path("wf.yaml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// Runs `rota ARGS`, expecting `code`, and returns its stdout as redacted JSON.
fn json(env: &Env, args: &[&str], code: i32) -> Value {
    let o = rota(env).args(args).output().expect("rota");
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let mut v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?} prints JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    redact(&mut v);
    v
}

#[test]
fn json_shapes_of_apply_diff_get_delete_and_run() {
    let env = spawn_server();
    let file = docs(&env, "echo b");

    insta::assert_json_snapshot!("apply_created", json(&env, &["apply", "-f", &file, "--json"], 0));
    insta::assert_json_snapshot!("apply_unchanged", json(&env, &["apply", "-f", &file, "--json"], 0));

    // diff prints the dry run's answer (exit 1: something would change).
    let changed = docs(&env, "echo b-changed");
    insta::assert_json_snapshot!("diff_configured", json(&env, &["diff", "-f", &changed, "--json"], 1));
    insta::assert_json_snapshot!("apply_configured", json(&env, &["apply", "-f", &changed, "--json"], 0));

    insta::assert_json_snapshot!("get_workflow", json(&env, &["get", "workflow", "greet", "-o", "json"], 0));
    // `--json` is `-o json`.
    assert_eq!(
        json(&env, &["get", "wf", "greet", "--json"], 0),
        json(&env, &["get", "workflow", "greet", "-o", "json"], 0)
    );
    insta::assert_json_snapshot!("get_workflows", json(&env, &["get", "workflows", "-o", "json"], 0));

    insta::assert_json_snapshot!("run", json(&env, &["run", "greet", "--input", "who=ada", "--json"], 0));

    insta::assert_json_snapshot!("delete_one", json(&env, &["delete", "wf", "tiny", "--json"], 0));
    // A file's resources, one of them already gone (reported, exit 0).
    insta::assert_json_snapshot!("delete_file", json(&env, &["delete", "-f", &file, "--json"], 0));
    insta::assert_json_snapshot!("get_workflows_empty", json(&env, &["get", "workflows", "-o", "json"], 0));
}
