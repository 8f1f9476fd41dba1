//! Declared worker configs end to end (issue 14, "WorkerConfig"), on both backends, with a
//! real background worker: a config's env, file and setup reach a job; a changed spec runs
//! setup again once; a failing setup leaves the worker registered, claiming nothing, with
//! `Degraded` and the output's tail in `worker stats` and `rota get`; a worker stopped
//! while its config changed applies the change before its first claim. Polls with
//! generous bounds and prints the times it observed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::*;
use rota_testkit::{Backend, Env, both_backends, bound, submit, wait_for_end};
use serde_json::Value;
use std::time::{Duration, Instant};

fn apply(env: &Env, spec: &str) {
    let path = env.path("config.yaml");
    std::fs::write(&path, format!("kind: WorkerConfig\nmetadata: {{name: tools}}\nspec:\n{spec}")).unwrap();
    let o = run(env, &["apply", "-f", &path_str(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

fn spec(tool_home: &str, setup: &str) -> String {
    format!(
        "  selector: {{workers: ['*']}}\n  env: {{TOOL_HOME: {tool_home}}}\n  files:\n    - {{path: bin/hello, mode: '0755', content: \"#!/bin/sh\\necho hello-from-file\\n\"}}\n  setup: {{run: '{setup}', timeout: 30s}}\n"
    )
}

/// Polls the worker's stats until `ok`; prints how long it took.
fn wait_stats(env: &Env, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let began = Instant::now();
    loop {
        let o = run(env, &["worker", "stats", "--json"]);
        let s = serde_json::from_slice::<Value>(&o.stdout).ok().and_then(|v| v["workers"].get(0).cloned());
        if let Some(s) = s.filter(|s| ok(s)) {
            eprintln!("{what}: observed after {:?}", began.elapsed());
            return s;
        }
        assert!(began.elapsed() < bound(), "{what}: not within {:?}; last: {}", bound(), stdout(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs(env: &Env, id: &str) -> String {
    stdout(&run(env, &["job", "logs", id]))
}

fn applied(s: &Value, config: &str) -> bool {
    s["configs"].as_array().is_some_and(|a| a.iter().any(|c| c == config))
}

const SETUP: &str = "echo setup-ran >> \"$ROTA_CONFIG_DIR/marker\"";
const PROBE: &str =
    "cat \"$ROTA_CONFIG_DIR/marker\"; echo \"tool=$TOOL_HOME\"; \"$ROTA_CONFIG_DIR/bin/hello\"";

both_backends!(fn a_config_sets_up_env_files_and_setup_and_degrades_on_failure);
fn a_config_sets_up_env_files_and_setup_and_degrades_on_failure(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start", "--concurrency", "2", "--json"]);
    assert_eq!(code(&o), 0, "{}\nlog:\n{}", stderr(&o), log(&env));

    apply(&env, &spec("/opt/tool", SETUP));
    wait_stats(&env, "config applied", |s| applied(s, "tools@1"));
    let id = submit(&env, &["--", "sh", "-c", PROBE]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));
    let out = logs(&env, &id);
    assert!(
        out.contains("setup-ran") && out.contains("tool=/opt/tool") && out.contains("hello-from-file"),
        "{out}"
    );

    // A changed spec runs setup once more.
    apply(&env, &spec("/opt/tool2", SETUP));
    wait_stats(&env, "generation 2 applied", |s| applied(s, "tools@2"));
    let id = submit(&env, &["--", "sh", "-c", PROBE]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");
    let out = logs(&env, &id);
    assert_eq!(out.matches("setup-ran").count(), 2, "{out}");
    assert!(out.contains("tool=/opt/tool2"), "{out}");

    // A failing setup: registered, Degraded with its output, and no claims until fixed.
    apply(&env, &spec("/opt/tool3", "echo broken-output; exit 7"));
    let s = wait_stats(&env, "degraded", |s| s["degraded"].is_string());
    assert!(s["degraded"].as_str().unwrap().contains("broken-output"), "{s:#}");
    let began = Instant::now();
    let degraded = loop {
        let o = run(&env, &["get", "workerconfig", "tools", "-o", "json"]);
        let got: Value = serde_json::from_slice(&o.stdout).unwrap();
        let found = got["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Degraded" && c["status"] == "True").cloned());
        if let Some(c) = found {
            eprintln!("Degraded on the config: observed after {:?}", began.elapsed());
            break c;
        }
        assert!(began.elapsed() < bound(), "no Degraded condition: {got:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("exited 7") && message.contains("broken-output"), "{message}");
    let (c, st) = status(&env, &[]);
    assert_eq!((c, st["server"]["registration"].as_str()), (0, Some("active")), "still registered: {st:#}");
    assert!(st["server"]["degraded"].as_str().is_some_and(|d| d.contains("broken-output")), "{st:#}");
    assert!(st["diagnostic"].as_str().is_some_and(|d| d.contains("taking no work")), "{st:#}");
    let waiting = submit(&env, &["--", "true"]);
    std::thread::sleep(Duration::from_secs(3));
    let shown = rota_testkit::show_json(&env, &waiting);
    assert_eq!(shown["state"], "queued", "a degraded worker claims nothing: {shown:#}");
    apply(&env, &spec("/opt/tool4", SETUP));
    let began = Instant::now();
    assert_eq!(wait_for_end(&env, &waiting)["state"], "succeeded");
    eprintln!("claims again after the fix: observed after {:?}", began.elapsed());

    // Stopped while the config changed: applied at the next start, before the first claim.
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
    apply(&env, &spec("/opt/tool5", "echo second-setup > \"$ROTA_CONFIG_DIR/marker2\""));
    let id = submit(&env, &["--", "sh", "-c", "cat \"$ROTA_CONFIG_DIR/marker2\"; echo \"tool=$TOOL_HOME\""]);
    let o = run(&env, &["worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");
    let out = logs(&env, &id);
    assert!(out.contains("second-setup") && out.contains("tool=/opt/tool5"), "{out}");

    // Deleted: its files and variables go.
    let o = run(&env, &["delete", "workerconfig", "tools"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_stats(&env, "the config removed", |s| s.get("configs").is_none());
    let id = submit(
        &env,
        &["--", "sh", "-c", "test ! -e \"$ROTA_CONFIG_DIR/bin/hello\" && test -z \"$TOOL_HOME\""],
    );
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
}

both_backends!(fn a_job_naming_a_project_runs_in_its_directory_where_mapped);
fn a_job_naming_a_project_runs_in_its_directory_where_mapped(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let demo = env.path("checkouts/demo");
    std::fs::create_dir_all(&demo).unwrap();
    let path = env.path("projects.yaml");
    std::fs::write(
        &path,
        format!(
            "kind: WorkerConfig\nmetadata: {{name: checkouts}}\nspec:\n  selector: {{workers: ['*']}}\n  projects: {{demo: {}}}\n",
            path_str(&demo)
        ),
    )
    .unwrap();
    let o = run(&env, &["apply", "-f", &path_str(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&env, &["worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "{}\nlog:\n{}", stderr(&o), log(&env));

    let doc = env.path("job.yaml");
    std::fs::write(
        &doc,
        "project: demo\nsteps:\n  - {name: where, run: 'pwd; echo \"project=$ROTA_PROJECT\"'}\n",
    )
    .unwrap();
    let id = submit(&env, &["-f", &path_str(&doc)]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "{}", logs(&env, &id));
    let out = logs(&env, &id);
    let real = std::fs::canonicalize(&demo).unwrap();
    assert!(out.contains(&path_str(&real)) || out.contains(&path_str(&demo)), "ran elsewhere: {out}");
    assert!(out.contains("project=demo"), "{out}");

    // No live worker maps `other`: unschedulable, saying so.
    std::fs::write(&doc, "project: other\nsteps:\n  - {name: s, run: 'true'}\n").unwrap();
    let id = submit(&env, &["-f", &path_str(&doc)]);
    std::thread::sleep(Duration::from_secs(1));
    let shown = rota_testkit::show_json(&env, &id);
    assert_eq!(shown["state"], "unschedulable", "{shown:#}");
    assert!(shown["reason"].as_str().unwrap_or_default().contains("maps project 'other'"), "{shown:#}");
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
}
