//! Declared worker pools end to end (issue 14, "WorkerPool"), on both backends, with real
//! background workers: a pool's concurrency and queues reach a running worker without a
//! restart, a worker started later has them before its first claim, and a setting fixed
//! at registration (tags) restarts a background worker once, as a recycle, not a crash.
//! Polls with generous bounds and prints the times it observed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::*;

use rota_testkit::{Backend, Env, both_backends, bound, submit, wait_for_end};
use serde_json::Value;
use std::time::{Duration, Instant};

fn apply(env: &Env, name: &str, settings: &str) {
    let path = env.path(&format!("{name}.yaml"));
    let doc = format!(
        "kind: WorkerPool\nmetadata: {{name: {name}}}\nspec:\n  selector: {{workers: ['*']}}\n  settings: {settings}\n"
    );
    std::fs::write(&path, doc).unwrap();
    let o = run(env, &["apply", "-f", &path_str(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// `worker stats --json` of the worker called `name`, if it answered.
fn stats_of(env: &Env, name: &str) -> Option<Value> {
    let o = run(env, &["worker", "stats", "--worker", name, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v["workers"].as_array()?.first().cloned()
}

/// Polls the stats of `name` until `ok`; returns them and prints how long it took.
fn wait_stats(env: &Env, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let began = Instant::now();
    loop {
        if let Some(s) = stats_of(env, name).filter(|s| ok(s)) {
            eprintln!("{what}: observed after {:?}", began.elapsed());
            return s;
        }
        assert!(
            began.elapsed() < bound(),
            "{what}: not within {:?}; last stats: {:?}",
            bound(),
            stats_of(env, name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn queues(s: &Value) -> Vec<String> {
    s["queues"]
        .as_array()
        .map(|a| a.iter().filter_map(|q| q.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

both_backends!(fn a_pool_retunes_running_and_new_workers);
fn a_pool_retunes_running_and_new_workers(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start", "--concurrency", "2", "--json"]);
    assert_eq!(code(&o), 0, "{}\nlog:\n{}", stderr(&o), log(&env));
    let first = json(&o);
    let name = first["name"].as_str().expect("name").to_string();
    let s = wait_stats(&env, &name, "the worker answers stats", |_| true);
    assert_eq!((s["activeConcurrency"].as_u64(), s.get("pool")), (Some(2), None), "{s:#}");

    // Concurrency 2 → 5 and a second queue, live.
    apply(&env, "fast", "{concurrency: 5, queues: [default, extra]}");
    let s = wait_stats(&env, &name, "the running worker takes the pool", |s| {
        s["activeConcurrency"] == 5 && queues(s).contains(&"extra".to_string()) && s["pool"] == "fast"
    });
    assert_eq!(s["poolGeneration"], 1, "{s:#}");
    let (_, st) = status(&env, &[]);
    assert_eq!(st["server"]["pool"], "fast (generation 1)", "worker status names the pool: {st:#}");
    let (c, st) = status(&env, &[]);
    assert_eq!(
        (c, st["worker"]["pid"].clone(), st["restarts"].as_u64()),
        (0, first["pid"].clone(), Some(0)),
        "not restarted: {st:#}"
    );
    let id = submit(&env, &["--queue", "extra", "--", "true"]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");

    // A worker started afterwards has the pool before its first claim.
    let o = run(&env, &["worker", "start", "--profile", "late", "--concurrency", "1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let late = json(&o)["name"].as_str().expect("name").to_string();
    // `start` returns once it registered; the pool is in force before its first claim
    // (`worker/src/lifecycle.rs`), a moment later.
    let s = wait_stats(&env, &late, "the late worker has the pool", |s| s["pool"] == "fast");
    assert_eq!(s["activeConcurrency"].as_u64(), Some(5), "{s:#}");
    assert!(queues(&s).contains(&"extra".to_string()), "{s:#}");
    assert_eq!(code(&run(&env, &["worker", "stop", "--profile", "late"])), 0);

    // Tags are fixed at registration: the background worker drains and is started again,
    // once, as a recycle (exit 75), not a crash; the new one registers with them.
    apply(&env, "fast", "{concurrency: 5, queues: [default, extra], tags: [gpu]}");
    let began = Instant::now();
    let st = wait_status(&env, bound(), "the worker restarted for the pool's tags", |c, s| {
        c == 0
            && s["restarts"] == 1
            && s["worker"]["pid"] != first["pid"]
            && s["server"]["registration"] == "active"
    });
    eprintln!("restart for the pool's tags observed after {:?}", began.elapsed());
    assert_eq!(st["lastExit"]["kind"], "recycle", "{st:#}");
    assert!(st["failedReason"].is_null(), "{st:#}");
    let id = submit(&env, &["--tag", "gpu", "--", "true"]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded", "a job asking for the pool's tag runs");
    std::thread::sleep(Duration::from_secs(5));
    let (_, st) = status(&env, &[]);
    assert_eq!(st["restarts"], 1, "restarted once, not in a loop: {st:#}");
    let s = wait_stats(&env, &name, "the restarted worker keeps the pool", |s| s["pool"] == "fast");
    assert_eq!(s["poolGeneration"], 2, "{s:#}");

    // Deleting the pool gives the worker its own settings back, live.
    let o = run(&env, &["delete", "workerpool", "fast"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_stats(&env, &name, "the worker's own settings back", |s| {
        s["activeConcurrency"] == 2 && s.get("pool").is_none() && !queues(s).contains(&"extra".to_string())
    });
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
}
