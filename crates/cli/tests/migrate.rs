//! `rota migrate --from sqlite:PATH --to postgres://…` end to end (issue 12): a real
//! SQLite control plane made by a real `rota server` and worker, copied into a fresh
//! PostgreSQL database, then served from there by a server in the same tree (same token
//! files). Also: a running source, a non-empty target and bad flags are refused, and a copy
//! killed mid-way leaves the target empty and the copy re-runnable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::postgres::TestDb;
use rota_testkit::require::require_test_hooks;
use rota_testkit::{
    Env, Proc, bound, isolate, rota, rota_bin, show_json, spawn_worker, submit, wait_for_end, wait_for_state,
};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// `rota migrate` from the tree's default SQLite database into `to`.
fn migrate(env: &Env, to: &str) -> std::process::Output {
    let from = format!("sqlite:{}", env.data_dir().join("rota.db").display());
    rota(env).args(["migrate", "--from", &from, "--to", to]).output().expect("rota migrate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rota job logs ID` as bytes.
fn logs(env: &Env, id: &str) -> Vec<u8> {
    let out = rota(env).args(["job", "logs", id]).output().expect("rota job logs");
    assert!(out.status.success(), "logs {id}: {}", text(&out.stderr));
    out.stdout
}

/// Job ids through `rota job list --json`, as listed.
fn job_ids(env: &Env) -> Vec<String> {
    let out = rota(env).args(["job", "list", "--json", "--limit", "100"]).output().expect("rota job list");
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("list --json");
    let rows = v.as_array().or_else(|| v["jobs"].as_array()).cloned().unwrap_or_default();
    rows.iter().map(|j| j["id"].as_str().expect("id").to_string()).collect()
}

/// The largest `attemptId` anywhere in a job's JSON.
fn max_attempt_id(v: &Value) -> i64 {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| if k == "attemptId" { x.as_i64().unwrap_or(0) } else { max_attempt_id(x) })
            .max()
            .unwrap_or(0),
        Value::Array(a) => a.iter().map(max_attempt_id).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether `queue` is paused, by `rota worker stats --json`.
fn paused(env: &Env, queue: &str) -> bool {
    let out = rota(env).args(["worker", "stats", "--json"]).output().expect("rota worker stats");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stats --json: {e}: {}{}", text(&out.stdout), text(&out.stderr)));
    v["queues"].as_array().into_iter().flatten().any(|q| q["queue"] == queue && q["paused"] == true)
}

/// The SQLite control plane the tests copy: succeeded (with a 3 MB binary log), failed,
/// cancelled, queued and DAG jobs, a worker (gone by now), a job revoke, a key revoke and
/// a paused queue. Returns the queued job's id and the big job's expected output; the
/// server is stopped.
fn sqlite_control_plane(env: &mut Env) -> (String, Vec<u8>) {
    env.start_server(&[]);
    let mut w = spawn_worker(env, "w1", &["--queue", "default"]);
    let m = env.path("m");
    std::fs::create_dir_all(&m).unwrap();
    let big_file = m.join("big.bin");
    let big = submit(
        env,
        &[
            "--step",
            &format!(
                "s=head -c 3000000 /dev/urandom > {p}; printf '\\377\\000' >> {p}; cat {p}",
                p = big_file.display()
            ),
        ],
    );
    let failed = submit(env, &["--step", "s=echo bad; echo worse >&2; exit 3"]);
    let dag = submit(env, &["--step", "a=echo a", "--step", "b=echo b", "--needs", "b=a"]);
    let cancelled = submit(env, &["--step", "s=echo started; sleep 300"]);
    wait_for_state(env, &cancelled, &["running"], bound());
    let out = rota(env).args(["job", "cancel", &cancelled]).output().unwrap();
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    let queued = submit(env, &["--queue", "later", "--", "echo", "ran later"]);
    let held = submit(env, &["--queue", "held", "--", "echo", "never while paused"]);
    let _ = held;
    for id in [&big, &failed, &dag, &cancelled] {
        wait_for_end(env, id);
    }
    for (args, what) in [
        (vec!["worker", "pause", "--queue", "held"], "pause"),
        (vec!["worker", "revoke", "--expires", "1h", &queued], "revoke"),
        (vec!["worker", "revoke", "--key", "nightly-42"], "key revoke"),
    ] {
        let out = rota(env).args(&args).output().unwrap();
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    }
    w.terminate(Duration::from_secs(30));
    env.stop_server();
    (queued, std::fs::read(&big_file).unwrap())
}

#[test]
fn a_sqlite_control_plane_moves_to_postgres_whole() {
    let Some(db) = TestDb::create_blocking() else { return };
    let mut env = Env::new();
    let (queued, big_expected) = {
        // Before stopping, migrating a source that a server holds is refused.
        env.start_server(&[]);
        let out = migrate(&env, &db.url);
        assert!(!out.status.success(), "migrated a served database");
        let err = text(&out.stderr);
        assert!(err.contains("already served") && err.contains("stop the server first"), "{err}");
        env.stop_server();
        sqlite_control_plane(&mut env)
    };
    // What the SQLite server answers (its last answers, served once more for the record).
    env.start_server(&[]);
    let ids = job_ids(&env);
    assert!(ids.len() >= 6, "{ids:?}");
    let before: Vec<(Value, Vec<u8>)> = ids.iter().map(|id| (show_json(&env, id), logs(&env, id))).collect();
    assert!(before.iter().any(|(_, l)| l.windows(big_expected.len()).any(|w| w == big_expected)));
    assert!(paused(&env, "held"));
    env.stop_server();

    let started = Instant::now();
    let out = migrate(&env, &db.url);
    assert!(out.status.success(), "migrate failed: {}{}", text(&out.stdout), text(&out.stderr));
    let summary = text(&out.stdout);
    eprintln!("migrated in {:?}: {summary}", started.elapsed());
    assert!(
        summary.contains("migrated") && summary.contains("jobs") && summary.contains("log_chunks"),
        "{summary}"
    );

    // Served from PostgreSQL with the same token files.
    env.start_server(&["--database", &db.url]);
    assert_eq!(job_ids(&env), ids, "job list");
    for (id, (show, log)) in ids.iter().zip(&before) {
        assert_eq!(&show_json(&env, id), show, "job show --json {id}");
        assert!(logs(&env, id) == *log, "logs of {id} differ after the copy");
    }
    assert!(paused(&env, "held"), "the paused queue is still paused");
    // The revoked queued job stays revoked; the key revoke still ends a new job at once.
    let r = show_json(&env, &queued);
    assert_eq!(r["state"], "revoked", "{r:#}");
    let keyed = submit(&env, &["--idempotency-key", "nightly-42", "--", "echo", "no"]);
    assert_eq!(wait_for_end(&env, &keyed)["state"], "revoked");
    // A new job runs on a new worker; attempt ids continue past the copied ones.
    let _w = spawn_worker(&env, "w2", &["--queue", "later"]).kill_on_drop();
    let fresh = submit(&env, &["--queue", "later", "--", "echo", "after the move"]);
    let done = wait_for_end(&env, &fresh);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(text(&logs(&env, &fresh)).trim(), "after the move");
    let copied_max = before.iter().map(|(show, _)| max_attempt_id(show)).max().unwrap_or(0);
    assert!(max_attempt_id(&done) > copied_max, "attempt ids continue past the copied ones ({copied_max})");

    // A second copy into the now non-empty database is refused, naming it (no password).
    env.stop_server();
    let out = migrate(&env, &db.url);
    assert!(!out.status.success(), "copied into a non-empty database");
    let err = text(&out.stderr);
    assert!(err.contains("is not empty") && err.contains(db.name()), "{err}");
}

#[test]
fn a_copy_killed_midway_leaves_the_target_empty_and_can_run_again() {
    if !require_test_hooks() {
        return;
    }
    let Some(db) = TestDb::create_blocking() else { return };
    let mut env = Env::new();
    env.start_server(&[]);
    let _w = spawn_worker(&env, "w1", &[]).kill_on_drop();
    let id = submit(&env, &["--step", "s=head -c 2000000 /dev/zero | tr '\\0' x"]);
    wait_for_end(&env, &id);
    env.stop_server();
    let from = format!("sqlite:{}", env.data_dir().join("rota.db").display());
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, &env);
    cmd.args(["migrate", "--from", &from, "--to", &db.url, "--test-stall-in", "log_chunks"]);
    let (mut copy, _) = Proc::spawn(cmd, "stalled in log_chunks");
    copy.kill();
    // The target holds nothing of the killed copy: a new copy is not refused as non-empty.
    let started = Instant::now();
    let out = migrate(&env, &db.url);
    eprintln!("re-run after kill -9 took {:?}", started.elapsed());
    assert!(out.status.success(), "re-run failed: {}{}", text(&out.stdout), text(&out.stderr));
    env.start_server(&["--database", &db.url]);
    assert_eq!(show_json(&env, &id)["state"], "succeeded");
    assert_eq!(logs(&env, &id).len(), 2_000_000);
}

#[test]
fn bad_sources_and_targets_are_usage_errors() {
    let env = Env::new();
    let missing = format!("sqlite:{}", env.path("nope.db").display());
    for (from, to, says) in [
        ("mysql://u@h/db", "postgres://u@h/db", "unknown scheme mysql://"),
        (missing.as_str(), "postgres://u@h/db", "no such file"),
        ("postgres://u@h/a", "postgres://u@h/b", "copies from SQLite"),
        (missing.as_str(), "sqlite:/tmp/x.db", "copies into PostgreSQL"),
    ] {
        let out = rota(&env).args(["migrate", "--from", from, "--to", to]).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from} → {to}: {err}");
        assert!(err.contains(says), "{from} → {to}: {err}");
    }
    let out = rota(&env).args(["migrate", "--help"]).output().unwrap();
    assert!(text(&out.stdout).contains("rota migrate --from sqlite:"), "{}", text(&out.stdout));
}
