//! Revocable credentials (issue 18, acceptance 2 and 3) on both backends, with real
//! processes: `rota worker forget` cuts a running worker off (its step is killed at once,
//! it exits 78 on the `forgotten` 401, its attempt is retried on another worker), `--block`
//! keeps the name out until `unblock`; `rota token rotate join --grace 30s` keeps the old
//! token working through the grace only, and a background worker whose supervisor got the
//! new token over its link registers after the grace both when crash-restarted and after
//! `rota worker restart`. Polls with generous bounds and prints what it observed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::*;
use rota_testkit::{
    Backend, Env, both_backends, bound, pid_alive, spawn_worker, submit, wait_for_end, wait_until,
};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn worker_list(env: &Env) -> Vec<Value> {
    let o = run(env, &["worker", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)["workers"].as_array().cloned().unwrap_or_default()
}

fn live_session(env: &Env, name: &str) -> Option<String> {
    worker_list(env)
        .into_iter()
        .find(|w| w["name"] == name && w["state"] == "active")
        .and_then(|w| w["sessionId"].as_str().map(String::from))
}

/// A foreground worker with extra flags, not waited for (it may be refused).
fn worker_cmd(env: &Env, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(rota_testkit::rota_bin());
    rota_testkit::isolate(&mut cmd, env);
    cmd.args(["worker", "run", "--name", name, "--workspace"])
        .arg(env.path(&format!("ws-{name}")))
        .args(args);
    cmd
}

both_backends!(fn worker_forget_cuts_a_running_worker_off);
fn worker_forget_cuts_a_running_worker_off(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let mut a = spawn_worker(&env, "wa", &[]);
    // The first attempt leaves a marker, says its pid and sleeps; the retry finds the
    // marker and succeeds.
    let (marker, pidfile) = (env.path("marker"), env.path("step.pid"));
    let script = format!(
        "if [ -e {m} ]; then echo second; exit 0; fi; touch {m}; echo $$ > {p}; exec sleep 300",
        m = marker.display(),
        p = pidfile.display()
    );
    let id = submit(&env, &["--retries", "1", "--", "sh", "-c", &script]);
    let pid: i32 = rota_testkit::wait_file(&pidfile, bound()).trim().parse().unwrap();
    assert!(pid_alive(pid));

    let start = Instant::now();
    let o = run(&env, &["worker", "forget", "wa"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("1 session ended") && out.contains("1 running attempt lost"), "{out}");
    let exit = a.wait_exit(Duration::from_secs(30));
    let took = start.elapsed();
    eprintln!("the forgotten worker exited {exit:?} after {took:?}");
    assert_eq!(exit, Some(78), "exit 78 (configuration); its output:\n{}", a.output());
    assert!(a.output().contains("forgotten"), "it says why:\n{}", a.output());
    wait_until(bound(), "the forgotten worker's step is killed", || !pid_alive(pid));
    eprintln!("its step was gone after {:?}", start.elapsed());

    // Retried elsewhere.
    let _b = spawn_worker(&env, "wb", &[]);
    let job = wait_for_end(&env, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["stepDetails"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["status"], "lost");
    assert!(attempts[0]["reason"].as_str().unwrap_or_default().contains("forgotten"), "{job:#}");

    // Not blocked: the name registers again. Blocked: refused (exit 78) until unblocked.
    let again = spawn_worker(&env, "wa", &[]);
    drop(again);
    let o = run(&env, &["worker", "forget", "wa", "--block", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["blocked"], true);
    let refused = worker_cmd(&env, "wa", &[]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{err}");
    assert!(err.contains("--block") && err.contains("rota worker unblock wa"), "{err}");
    let o = run(&env, &["worker", "unblock", "wa"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("unblocked"), "{}", stdout(&o));
    let _back = spawn_worker(&env, "wa", &[]);
    let o = run(&env, &["worker", "forget", "nobody-ever"]);
    assert_eq!(code(&o), 1, "an unknown name: {}", stderr(&o));
    assert!(stderr(&o).contains("no worker named"), "{}", stderr(&o));
}

both_backends!(fn token_rotate_join_with_grace_reaches_supervisors);
fn token_rotate_join_with_grace_reaches_supervisors(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _cleanup = Cleanup::new(&env);
    let old = env.join_token();
    // A background worker holding its own copy of the join token (as on a host of its own).
    let o = run(
        &env,
        &["worker", "start", "--name", "bg", "--join-token", &old, "--restart-delay", "200ms", "--json"],
    );
    assert_eq!(code(&o), 0, "start failed: {}\nlog:\n{}", stderr(&o), log(&env));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(meta_path(&env)).unwrap()).unwrap();
    let token_file = std::path::PathBuf::from(meta["joinTokenFile"].as_str().expect("its own token file"));
    wait_until(bound(), "bg registered", || live_session(&env, "bg").is_some());

    let o = run(&env, &["token", "rotate", "join", "--grace", "30s"]);
    let rotated = Instant::now();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "the local file is rewritten, nothing printed: {}", stdout(&o));
    assert!(stderr(&o).contains("registers until"), "{}", stderr(&o));
    let new = env.join_token();
    assert_ne!(new, old);

    // During the grace the old token still registers.
    let during = spawn_worker(&env, "fg-old", &["--join-token", &old]);
    drop(during);
    // The supervisor's link receives the new token and saves it.
    wait_until(bound(), "the supervisor saved the new join token", || {
        std::fs::read_to_string(&token_file).map(|t| t.trim() == new).unwrap_or(false)
    });
    eprintln!("the supervisor saved the new token {:?} after the rotation", rotated.elapsed());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // After the grace the old token is refused...
    let grace_end = rotated + Duration::from_secs(31);
    std::thread::sleep(grace_end.saturating_duration_since(Instant::now()));
    let refused = worker_cmd(&env, "fg-late", &["--join-token", &old]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{err}");
    assert!(err.contains("did not accept the join token"), "{err}");

    // ...while the background worker re-registers, crash-restarted and restarted.
    let before = live_session(&env, "bg").expect("bg is live");
    let worker = rota_procs(&env).into_iter().find(|p| p.is_worker()).expect("bg's worker process");
    let _ = Command::new("kill").args(["-9", &worker.pid.to_string()]).status();
    let start = Instant::now();
    wait_until(bound(), "bg crash-restarted and registered with the new token", || {
        live_session(&env, "bg").is_some_and(|s| s != before)
    });
    eprintln!("crash-restarted and registered after {:?}", start.elapsed());
    let before = live_session(&env, "bg").unwrap();
    let o = run(&env, &["worker", "restart", "--json"]);
    assert_eq!(code(&o), 0, "restart failed: {}\nlog:\n{}", stderr(&o), log(&env));
    wait_until(bound(), "bg restarted and registered with the new token", || {
        live_session(&env, "bg").is_some_and(|s| s != before)
    });
}
