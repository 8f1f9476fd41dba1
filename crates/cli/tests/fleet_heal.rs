//! Fleet health (issue 16, acceptance 1) on both backends, with a real background worker:
//! its supervisor links to the server; driven into a crash loop it is listed `failed` with
//! its last error by the server (from the supervisor's report, no subprocess); `worker heal
//! --fleet --dry-run` heals nothing; `worker heal --fleet` heals it through the server,
//! printing starting, healed and done. Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::*;
use rota_testkit::{Backend, Env, both_backends, bound, wait_until};
use serde_json::Value;
use std::time::Instant;

fn supervisors(env: &Env) -> Vec<Value> {
    let o = run(env, &["worker", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["supervisors"].as_array().cloned().unwrap_or_default()
}

fn phases(o: &std::process::Output) -> Vec<String> {
    stdout(o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("NDJSON")["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

both_backends!(async fn a_crash_looping_background_worker_is_seen_failed_and_healed_through_the_server);
async fn a_crash_looping_background_worker_is_seen_failed_and_healed_through_the_server(backend: Backend) {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let crash = env.path("crash-now");
    let crash_s = path_str(&crash);
    let o = run(
        &env,
        &[
            "worker",
            "start",
            "--json",
            "--test-crash-file",
            &crash_s,
            "--restart-delay",
            "200ms",
            "--max-restarts",
            "3",
            "--min-uptime",
            "20s",
        ],
    );
    assert_eq!(code(&o), 0, "start failed: {}\nlog:\n{}", stderr(&o), log(&env));

    let start = Instant::now();
    wait_until(bound(), "the supervisor reports running", || {
        supervisors(&env).iter().any(|s| s["state"] == "running" && !s["worker"].is_null())
    });
    eprintln!("supervisor linked and running after {:?}", start.elapsed());

    std::fs::write(&crash, b"").unwrap();
    let start = Instant::now();
    wait_until(bound(), "the server lists the supervisor failed", || {
        supervisors(&env).iter().any(|s| s["state"] == "failed")
    });
    eprintln!("listed failed after {:?}", start.elapsed());
    let s = supervisors(&env).into_iter().find(|s| s["state"] == "failed").unwrap();
    assert!(s["lastError"].as_str().unwrap_or_default().contains("crash loop"), "{s:#}");
    let table = stdout(&run(&env, &["worker", "list"]));
    assert!(table.contains("failed") && table.contains("crash loop"), "{table}");
    std::fs::remove_file(&crash).unwrap();

    // A dry run heals nothing.
    let o = run(&env, &["worker", "heal", "--fleet", "--dry-run", "--json"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(phases(&o), ["detected", "done"], "{}", stdout(&o));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(supervisors(&env).iter().any(|s| s["state"] == "failed"), "a dry run changed something");

    // The heal, through the server.
    let start = Instant::now();
    let o = run(&env, &["worker", "heal", "--fleet", "--json"]);
    assert_eq!(code(&o), 0, "heal failed: {}\n{}\nlog:\n{}", stdout(&o), stderr(&o), log(&env));
    assert_eq!(phases(&o), ["starting", "healed", "done"], "{}", stdout(&o));
    assert!(stderr(&o).contains("Healed 1 worker(s), 0 failed."), "{}", stderr(&o));
    eprintln!("healed through the server in {:?}", start.elapsed());
    let (c, st) = status(&env, &[]);
    assert_eq!(c, 0, "{st:#}");
    wait_until(bound(), "the supervisor reports running again", || {
        supervisors(&env).iter().any(|s| s["state"] == "running")
    });
    // Nothing left to heal.
    let o = run(&env, &["worker", "heal", "--fleet", "--json"]);
    assert_eq!(phases(&o), ["done"], "{}", stdout(&o));
}
