//! The background worker end to end (issue 3's acceptance list): real processes, a real
//! server and an isolated HOME/XDG tree per test. Concurrent starts, fail-fast starts,
//! stale pid files, supervision and heal, a hung control port, status, multi, diagnose, a
//! closing terminal. Bounds derive from configured timeouts, with wide margins.

use rota_testkit::background::*;
use rota_testkit::procs::{group_members, kill, pgid_of, wait_group_gone};
use rota_testkit::{Env, bound, spawn_server, submit, wait_until};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Slack on top of configured timeouts for a loaded machine. Still below the 15 s default
/// wait, so a refusal that waited for it is told apart.
const MARGIN: Duration = Duration::from_secs(10);

fn start_json(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["worker", "start", "--json"];
    args.extend_from_slice(extra);
    let o = run(env, &args);
    assert_eq!(code(&o), 0, "start failed: {}\nlog:\n{}", stderr(&o), log(env));
    json(&o)
}

fn worker_pid(s: &serde_json::Value) -> Option<i64> {
    s["worker"]["pid"].as_i64()
}

/// Point 1: Twenty concurrent starts → one supervisor, one worker, all report the same pid.
#[test]
fn twenty_concurrent_starts_make_exactly_one_worker() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..20).map(|_| s.spawn(|| run(&env, &["worker", "start", "--json"]))).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut pids = std::collections::BTreeSet::new();
    let mut started = 0;
    for o in &outputs {
        assert_eq!(code(o), 0, "a start failed: {}", stderr(o));
        let v = json(o);
        pids.insert(v["pid"].as_i64().expect("pid"));
        started += usize::from(v["outcome"] == "started");
    }
    assert_eq!(pids.len(), 1, "different pids reported: {pids:?}");
    assert_eq!(started, 1, "exactly one start should have started it");
    let procs = rota_procs(&env);
    assert_eq!(procs.iter().filter(|p| p.is_supervisor()).count(), 1, "{procs:?}");
    let workers: Vec<_> = procs.iter().filter(|p| p.is_worker()).collect();
    assert_eq!(workers.len(), 1, "{procs:?}");
    assert_eq!(i64::from(workers[0].pid), *pids.first().expect("pid"));
    assert_ne!(procs[0].argv, procs[1].argv, "supervisor and worker must have distinct argv");
}

/// 2a. Unreachable server: fails at the wait deadline, names the log and the command,
/// leaves no worker, and status says failed with the reason.
#[test]
fn an_unreachable_server_fails_at_the_deadline() {
    let env = Env::new(); // its server URL is a closed port
    let _cleanup = Cleanup::new(&env);
    let began = Instant::now();
    let o = run(&env, &["worker", "start", "--wait-timeout", "3s", "--join-token", "some-token"]);
    let took = began.elapsed();
    assert_ne!(code(&o), 0);
    assert!(took >= Duration::from_secs(3), "gave up before the deadline: {took:?}");
    assert!(took < Duration::from_secs(3) + MARGIN, "took {took:?}");
    let err = stderr(&o);
    assert!(err.contains("did not register within 3s"), "{err}");
    assert!(err.contains(&path_str(&env.path("state/rota/workers/default.log"))), "no log path: {err}");
    assert!(err.contains("rota --server http://127.0.0.1:1 worker run"), "no foreground command: {err}");
    assert!(err.contains("cannot register yet"), "no last log lines: {err}");
    assert!(rota_procs(&env).iter().all(|p| !p.is_worker()), "a worker remains");
    let (c, s) = status(&env, &[]);
    assert_eq!(c, 3);
    assert_eq!(s["state"], "failed");
    assert!(s["failedReason"].as_str().unwrap_or_default().contains("did not register"), "{s:#}");
    // Failed means no restart loop: still no worker a moment later.
    std::thread::sleep(Duration::from_secs(1));
    assert!(rota_procs(&env).iter().all(|p| !p.is_worker()), "restarted after failing");
}

/// 2b. A wrong join token: fails at once (exit 78 of the worker), same message parts.
#[test]
fn a_refused_token_fails_at_once() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let began = Instant::now();
    let o = run(&env, &["worker", "start", "--join-token", "wrong"]);
    let took = began.elapsed();
    assert_ne!(code(&o), 0);
    assert!(took < MARGIN, "a refusal must not wait for the 15s deadline: {took:?}");
    let err = stderr(&o);
    assert!(err.contains("refused at once") && err.contains("join token"), "{err}");
    assert!(err.contains(&path_str(&env.path("state/rota/workers/default.log"))), "{err}");
    assert!(err.contains("to reproduce in the foreground: ROTA_JOIN_TOKEN=\"$(cat "), "{err}");
    assert!(!err.contains("wrong"), "the token must not be printed: {err}");
    assert!(rota_procs(&env).iter().all(|p| !p.is_worker()));
    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str()), (3, Some("failed")), "{s:#}");
    assert!(s["failedReason"].as_str().unwrap_or_default().contains("join token"), "{s:#}");
    assert_eq!(s["lastExit"]["code"], 78);
}

/// Point 3: A pid file naming a live unrelated process: start starts a real worker; stop never
/// signals the unrelated process.
#[test]
fn a_pidfile_naming_an_unrelated_process_is_not_trusted() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let mut sleep = Command::new("sleep").arg("300").spawn().expect("sleep");
    let sleep_pid = sleep.id() as i32;
    let pidfile = env.path("runtime/rota/workers/default.pid");
    std::fs::create_dir_all(pidfile.parent().expect("dir")).expect("mkdir");
    std::fs::write(&pidfile, format!("{sleep_pid}\n")).expect("write pidfile");

    let o = run(&env, &["worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["outcome"], "started");
    assert_ne!(v["pid"].as_i64(), Some(i64::from(sleep_pid)));
    assert!(v["notes"].to_string().contains("stale pid file"), "{v:#}");
    let (c, _) = status(&env, &[]);
    assert_eq!(c, 0);
    let o = run(&env, &["worker", "stop"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(rota_testkit::pid_alive(sleep_pid), "stop killed an unrelated process");
    let (_, s) = status(&env, &[]);
    assert_eq!(s["server"]["registration"], "offline", "a clean stop unregisters: {s:#}");
    let o = run(&env, &["worker", "stop"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("not running"), "{}", stdout(&o));
    assert!(rota_testkit::pid_alive(sleep_pid));
    let _ = sleep.kill();
    let _ = sleep.wait();
}

/// Point 4: kill -9 of the worker: restarted, its step groups gone. Repeated crashes: failed.
/// Heal: starting, healed, done, with the saved settings' bytes unchanged. Heal with
/// nothing to do: done, exit 0.
#[test]
fn crashes_are_restarted_until_failed_and_heal_brings_it_back() {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let crash = env.path("crash-now");
    let flags = crash_loop_flags(&crash);
    let v = start_json(&env, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let first = v["pid"].as_i64().expect("pid") as i32;
    let steppid = env.path("step.pid");
    submit(&env, &["--step", &format!("s=echo $$ > {}; sleep 300 & sleep 300", steppid.display())]);
    let step: i32 = rota_testkit::wait_file(&steppid, bound()).parse().expect("step pid");
    assert_eq!(pgid_of(step), Some(step), "steps lead their own process group");
    wait_until(bound(), "the step's two processes", || group_members(step).len() >= 2);

    kill("KILL", first);
    let s = wait_status(&env, bound(), "running again with a new worker", |c, s| {
        c == 0 && worker_pid(s).is_some_and(|p| p != i64::from(first))
    });
    assert!(s["restarts"].as_u64() >= Some(1), "{s:#}");
    assert_eq!(s["lastExit"]["signal"], 9, "{s:#}");
    // Killed by the worker's spawner helpers as the worker died, or by the supervisor's
    // reaper if it looked first: which one wins is a race, that the group dies is not.
    wait_group_gone(step, bound());

    let meta_before = std::fs::read(meta_path(&env)).expect("settings");
    std::fs::write(&crash, b"").expect("crash file");
    let s = wait_status(&env, bound(), "failed after repeated crashes", |_, s| s["state"] == "failed");
    assert!(s["failedReason"].as_str().unwrap_or_default().contains("crash loop"), "{s:#}");
    std::thread::sleep(Duration::from_millis(800));
    assert!(rota_procs(&env).iter().all(|p| !p.is_worker()), "restarted after failing");
    // It registered before it crash-looped: its supervisor stays, holding the lock.
    assert_eq!(rota_procs(&env).iter().filter(|p| p.is_supervisor()).count(), 1, "{:?}", rota_procs(&env));
    assert_eq!(code(&run(&env, &["worker", "healthcheck"])), 1, "only the supervisor runs");
    std::fs::remove_file(&crash).expect("rm crash file");

    let o = run(&env, &["worker", "heal", "--json"]);
    assert_eq!(code(&o), 0, "heal failed: {}\n{}", stdout(&o), stderr(&o));
    let phases: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("NDJSON")["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(phases, ["starting", "healed", "done"], "{}", stdout(&o));
    assert!(stderr(&o).contains("Healed 1 worker(s), 0 failed."), "{}", stderr(&o));
    let (c, _) = status(&env, &[]);
    assert_eq!(c, 0);
    assert_eq!(std::fs::read(meta_path(&env)).expect("settings"), meta_before, "heal edited the settings");

    let o = run(&env, &["worker", "heal"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "done\nHealed 0 worker(s), 0 failed.\n");

    // A supervisor that dies: its worker stops with it, status says so, heal restarts it.
    let (_, s) = status(&env, &[]);
    let (sup, old) =
        (s["supervisor"]["pid"].as_i64().expect("sup") as i32, worker_pid(&s).expect("pid") as i32);
    kill("KILL", sup);
    wait_until(bound(), "the worker to stop with its supervisor", || !rota_testkit::pid_alive(old));
    let (c, s) = status(&env, &[]);
    assert_eq!(c, 3, "{s:#}");
    assert!(s["diagnostic"].as_str().unwrap_or_default().contains("died unexpectedly"), "{s:#}");
    let o = run(&env, &["worker", "heal", "--json"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(r#"{"phase":"starting","worker":"default","state":"expected_but_stopped"}"#),
        "{}",
        stdout(&o)
    );
    assert_eq!(status(&env, &[]).0, 0);
    // The killed supervisor may still be exiting.
    wait_until(MARGIN, "one supervisor and one worker", || rota_procs(&env).len() == 2);
    assert_eq!(std::fs::read(meta_path(&env)).expect("settings"), meta_before, "heal edited the settings");
    // A worker stopped on purpose is not healed.
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
    let o = run(&env, &["worker", "heal", "--json"]);
    assert_eq!((code(&o), stdout(&o).lines().count()), (0, 1), "{}", stdout(&o));
}

/// Point 5: stop on a worker whose control port hangs ends it within the documented bound;
/// its running step's process group (which ignores TERM) is gone.
#[test]
fn stop_ends_a_worker_whose_control_port_hangs() {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    start_json(&env, &["--test-hang-control", "--drain-timeout", "1h"]);
    let steppid = env.path("step.pid");
    submit(&env, &["--step", &format!("s=echo $$ > {}; trap '' TERM; sleep 300", steppid.display())]);
    let step: i32 = rota_testkit::wait_file(&steppid, bound()).parse().expect("step pid");
    // Documented: control request 2s + TERM→KILL 5s + supervisor 5s + its TERM/KILL 2×2s.
    let documented = Duration::from_secs(16);
    let began = Instant::now();
    let o = run(&env, &["worker", "stop"]);
    let took = began.elapsed();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(took < documented + MARGIN, "stop took {took:?}");
    assert!(stdout(&o).contains("signals"), "{}", stdout(&o));
    wait_group_gone(step, MARGIN);
    // Stop returns once the supervisor released its lock, which it does a moment before
    // its process is gone.
    wait_until(MARGIN, "the rota processes to be gone", || rota_procs(&env).is_empty());
    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str()), (3, Some("stopped")));
}

/// Point 6: status --json: running and registered (0), running with the server unreachable
/// (1), not running (3), failed (3).
#[test]
fn status_tells_running_unreachable_stopped_and_failed_apart() {
    let mut env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str(), s["running"].as_bool()), (3, Some("never_started"), Some(false)));

    start_json(&env, &[]);
    let (c, s) = status(&env, &[]);
    assert_eq!(c, 0, "{s:#}");
    assert_eq!((s["state"].as_str(), s["running"].as_bool()), (Some("running"), Some(true)));
    assert_eq!(s["server"]["registration"], "active", "{s:#}");
    assert!(s["worker"]["pid"].is_i64() && s["supervisor"]["pid"].is_i64() && s["port"].is_u64(), "{s:#}");
    assert!(s["diagnostic"].as_str().unwrap_or_default().starts_with("Running and registered"), "{s:#}");

    env.stop_server();
    let (c, s) = status(&env, &[]);
    assert_eq!(c, 1, "{s:#}");
    assert_eq!(
        (s["running"].as_bool(), s["server"]["registration"].as_str()),
        (Some(true), Some("unreachable"))
    );
    assert!(s["diagnostic"].as_str().unwrap_or_default().contains("unreachable"), "{s:#}");

    assert_eq!(code(&run(&env, &["worker", "stop", "--mode", "hard"])), 0);
    let (c, s) = status(&env, &[]);
    assert_eq!(
        (c, s["state"].as_str(), s["stoppedByUser"].as_bool()),
        (3, Some("stopped"), Some(true)),
        "{s:#}"
    );

    let o = run(&env, &["worker", "start", "--wait-timeout", "1s"]);
    assert_ne!(code(&o), 0);
    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str(), s["running"].as_bool()), (3, Some("failed"), Some(false)), "{s:#}");
    assert!(
        s["failedReason"].is_string() && s["diagnostic"].as_str().unwrap_or_default().starts_with("Failed")
    );
}

/// Point 7: multi with templates: pid and log files per node, status and healthcheck 0. After
/// multi stop they exit 3 and the pid files are gone. A shared pid file is refused first.
#[test]
fn multi_nodes_with_templated_files() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let dir = env.path("multi");
    let d = path_str(&dir);
    let o = run(
        &env,
        &[
            "worker",
            "multi",
            "start",
            "alpha",
            "beta",
            &format!("--pidfile={d}/%n.pid"),
            &format!("--logfile={d}/%n%I.log"),
        ],
    );
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    for f in ["alpha.pid", "beta.pid", "alpha1.log", "beta2.log"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert_eq!(code(&run(&env, &["worker", "multi", "status", "alpha", "beta"])), 0);
    let o = run(&env, &["worker", "healthcheck", "--node", "alpha", "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let h = json(&o);
    assert_eq!(h["alive"], true);
    assert!(h["pid"].is_i64() && h["uptimeS"].is_u64(), "{h:#}");
    assert_eq!(std::fs::read_to_string(dir.join("alpha.pid")).expect("pid").trim(), h["pid"].to_string());
    let by_pidfile = run(&env, &["worker", "healthcheck", "--pidfile", &format!("{d}/alpha.pid")]);
    assert_eq!(code(&by_pidfile), 0, "{}", stderr(&by_pidfile));
    // Each node registered under its node name.
    let (_, s) = status_node(&env, "beta");
    assert_eq!(
        (s["name"].as_str(), s["server"]["registration"].as_str()),
        (Some("beta"), Some("active")),
        "{s:#}"
    );

    assert_eq!(code(&run(&env, &["worker", "multi", "stop", "alpha", "beta"])), 0);
    assert_eq!(code(&run(&env, &["worker", "multi", "status", "alpha", "beta"])), 3);
    assert_eq!(code(&run(&env, &["worker", "healthcheck", "--node", "alpha"])), 3);
    assert!(!dir.join("alpha.pid").exists() && !dir.join("beta.pid").exists(), "pid files left behind");

    let o = run(&env, &["worker", "multi", "start", "gamma", "delta", &format!("--pidfile={d}/w.pid")]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("would share"), "{}", stderr(&o));
    assert!(!env.path("state/rota/workers/node-gamma.json").exists(), "something started");
    // The stopped nodes' supervisors released their locks a moment before exiting.
    wait_until(MARGIN, "the rota processes to be gone", || rota_procs(&env).is_empty());
}

fn status_node(env: &Env, node: &str) -> (i32, serde_json::Value) {
    let o = run(env, &["worker", "multi", "status", node, "--json"]);
    let v = json(&o);
    (code(&o), v[0].clone())
}

/// multi exports ROTA_WORKER_NODE/PIDFILE/LOGFILE/QUEUES to a custom command (here a
/// shell that records them, then execs the worker), and the node uses its queues.
#[test]
fn multi_exports_node_metadata_to_its_command() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let line = format!(
        "sh -c 'env | grep ^ROTA_WORKER_ | sort > {}/$ROTA_WORKER_NODE.env; exec {} worker run'",
        path_str(env.dir.path()),
        rota_testkit::rota_bin().display()
    );
    let o = run(
        &env,
        &[
            "worker",
            "multi",
            "start",
            "n1",
            "--queue",
            "q1",
            "--queue",
            "q2",
            "--command-line",
            &line,
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let exported = std::fs::read_to_string(env.path("n1.env")).expect("exports");
    assert!(exported.contains("ROTA_WORKER_NODE=n1"), "{exported}");
    assert!(exported.contains("ROTA_WORKER_QUEUES=q1,q2"), "{exported}");
    assert!(
        exported.contains("ROTA_WORKER_PIDFILE=") && exported.contains("ROTA_WORKER_LOGFILE="),
        "{exported}"
    );
    let (c, s) = status_node(&env, "n1");
    assert_eq!((c, s["name"].as_str()), (0, Some("n1")), "{s:#}");
}

/// Without XDG_RUNTIME_DIR, pid and lock files fall back to a private directory under
/// the state directory; corrupt saved files are quarantined, reported and not trusted;
/// `--no-wait` returns before the registration.
#[test]
fn runtime_dir_fallback_quarantine_and_no_wait() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let no_rt = |args: &[&str]| {
        let mut cmd = Command::new(rota_testkit::rota_bin());
        rota_testkit::isolate(&mut cmd, &env);
        cmd.env_remove("XDG_RUNTIME_DIR").args(args).output().expect("rota")
    };
    let workers = env.path("state/rota/workers");
    std::fs::create_dir_all(&workers).expect("mkdir");
    std::fs::write(workers.join("default.json"), r#"{"version": 99, "server": "x"}"#).expect("write");
    std::fs::write(workers.join("default.state.json"), "{garbage").expect("write");
    let o = no_rt(&["worker", "status", "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let s = json(&o);
    assert!(s["warnings"].to_string().contains("could not be trusted"), "{s:#}");
    let quarantined = |stem: &str| {
        std::fs::read_dir(&workers).expect("workers dir").flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(stem).is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".corrupt"))
        })
    };
    assert!(quarantined("default.json") && quarantined("default.state.json"));

    std::fs::write(workers.join("default.json"), "not json").expect("write");
    let o = no_rt(&["worker", "start", "--no-wait", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json(&o);
    assert!(v["pid"].is_null() && v["supervisorPid"].is_i64(), "{v:#}");
    assert!(v["notes"].to_string().contains("could not be trusted"), "{v:#}");
    let run_dir = env.path("state/rota/run");
    assert!(run_dir.join("default.pid").exists() && run_dir.join("default.instance.lock").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&run_dir).expect("run dir").permissions().mode() & 0o777, 0o700);
    wait_until(bound(), "the worker to register", || code(&no_rt(&["worker", "status"])) == 0);
    assert_eq!(code(&no_rt(&["worker", "stop"])), 0);
    assert!(!run_dir.join("default.pid").exists());
}

/// Flags given to start are saved: a start with other settings replaces the running
/// worker, restart keeps them, and a profile is a separate worker named `P@host`.
#[test]
fn saved_settings_restart_and_profiles() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let first = start_json(&env, &["--queue", "a"]);
    let again = start_json(&env, &[]);
    assert_eq!((again["outcome"].as_str(), again["pid"].as_i64()), (Some("reused"), first["pid"].as_i64()));
    let changed = start_json(&env, &["--queue", "b"]);
    assert_eq!(changed["outcome"], "started");
    assert_ne!(changed["pid"], first["pid"]);
    assert!(changed["notes"].to_string().contains("settings changed"), "{changed:#}");
    assert!(
        !rota_testkit::pid_alive(first["pid"].as_i64().expect("pid") as i32),
        "the replaced worker still runs"
    );

    let o = run(&env, &["worker", "restart", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restarted = json(&o);
    assert_ne!(restarted["pid"], changed["pid"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta_path(&env)).expect("settings")).expect("JSON");
    assert_eq!(meta["worker"]["queues"], serde_json::json!(["b"]));

    let o = run(&env, &["worker", "start", "--profile", "ci", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ci = json(&o);
    assert_eq!(ci["key"], "profile-ci");
    assert!(ci["name"].as_str().unwrap_or_default().starts_with("ci@"), "{ci:#}");
    let (c, s) = status(&env, &["--profile", "ci"]);
    assert_eq!((c, s["server"]["registration"].as_str()), (0, Some("active")), "{s:#}");
    // The replaced and restarted supervisors released their locks a moment before exiting.
    wait_until(MARGIN, "two supervisors and two workers", || rota_procs(&env).len() == 4);
    assert_eq!(code(&run(&env, &["worker", "stop", "--profile", "ci"])), 0);
    assert_eq!(status(&env, &[]).0, 0, "stopping a profile left the default one alone");
}

/// `rota server start|stop|restart|status` manage the control plane the same way: saved
/// flags, reuse, a worker can join it, restart keeps the flags, stop is clean.
#[test]
fn the_server_runs_in_the_background_too() {
    let env = Env::new();
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["server", "start", "--listen", "127.0.0.1:0", "--lease-ttl", "3s", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let started = json(&o);
    let url = started["name"].as_str().expect("url").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{started:#}");
    let again = json(&run(&env, &["server", "start", "--json"]));
    assert_eq!((again["outcome"].as_str(), again["pid"].clone()), (Some("reused"), started["pid"].clone()));
    let o = run(&env, &["server", "status", "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(json(&o)["server"]["registration"], "serving");

    let o = run(&env, &["--server", &url, "worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "a worker cannot join the background server: {}", stderr(&o));
    assert_eq!(status(&env, &[]).0, 0);

    let o = run(&env, &["server", "restart", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_ne!(json(&o)["pid"], started["pid"]);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("state/rota/workers/server.json")).expect("server settings"),
    )
    .expect("JSON");
    assert_eq!(meta["serverSettings"], serde_json::json!({"listen": "127.0.0.1:0", "leaseTtl": "3s"}));
    assert_eq!(code(&run(&env, &["worker", "stop", "--mode", "hard"])), 0);
    let o = run(&env, &["server", "stop"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&run(&env, &["server", "status"])), 3);
    // Stop returns once the supervisors released their locks, a moment before they exit.
    wait_until(MARGIN, "the rota processes to be gone", || rota_procs(&env).is_empty());
}

/// Without systemd, `enable` changes nothing and says what to do instead; `disable` with
/// nothing enabled is a no-op. (Where systemd runs, the unit is checked by unit tests.)
#[test]
fn enable_without_systemd_says_what_to_do_instead() {
    let systemd = std::path::Path::new("/run/systemd/system").is_dir();
    if !rota_testkit::require::require(
        !systemd,
        "a machine without systemd",
        "systemd runs here (/run/systemd/system)",
    ) {
        return;
    }
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "enable"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("rota worker start"), "{}", stderr(&o));
    start_json(&env, &[]);
    let o = run(&env, &["worker", "enable"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("systemd is not running") && stderr(&o).contains("@reboot"),
        "{}",
        stderr(&o)
    );
    assert!(!env.path("config/systemd/user/rota-worker.service").exists());
    let o = run(&env, &["worker", "disable"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("not enabled"), "{}", stdout(&o));
}

/// A worker that recycles itself (`--max-jobs`, exit 75) is restarted at once, and its
/// exit is not counted as a crash.
#[test]
fn a_recycling_exit_restarts_at_once_and_is_not_a_crash() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let first = start_json(&env, &["--max-jobs", "1", "--max-restarts", "1"]);
    let id = submit(&env, &["--", "true"]);
    rota_testkit::wait_for_end(&env, &id);
    let s = wait_status(&env, bound(), "running again after recycling", |c, s| {
        c == 0 && s["worker"]["pid"].as_i64().is_some_and(|p| Some(p) != first["pid"].as_i64())
    });
    assert_eq!(s["lastExit"]["kind"], "recycle", "{s:#}");
    assert_eq!(s["lastExit"]["code"], 75, "{s:#}");
    assert_eq!(s["restarts"], 1, "{s:#}");
    assert!(s["failedReason"].is_null(), "one restart allowed, yet recycling is not a crash: {s:#}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta_path(&env)).expect("settings")).expect("JSON");
    assert_eq!(meta["worker"]["maxJobs"], 1, "--max-jobs is saved: {meta:#}");
}

/// Point 8: diagnose reports a planted stale pid file and a bad env-file line by number.
#[test]
fn diagnose_reports_a_stale_pidfile_and_a_bad_env_line() {
    let env = Env::new();
    let mut gone = Command::new("true").spawn().expect("true");
    let dead_pid = gone.id();
    gone.wait().expect("wait");
    let pidfile = env.path("alpha.pid");
    std::fs::write(&pidfile, format!("{dead_pid}\n")).expect("pidfile");
    let envfile = env.path("bad.env");
    std::fs::write(&envfile, "# settings\nGOOD=1\nthis line is wrong\nALSO_GOOD='x'\n").expect("env file");

    let o = run(
        &env,
        &[
            "worker",
            "diagnose",
            "--pidfile",
            &path_str(&pidfile),
            "--env-file",
            &path_str(&envfile),
            "--json",
        ],
    );
    assert_eq!(code(&o), 1, "an env-file error is an error: {}", stdout(&o));
    let v = json(&o);
    let findings = v["findings"].as_array().expect("findings");
    let find = |check: &str, level: &str| {
        findings.iter().find(|f| f["check"] == check && f["level"] == level).cloned()
    };
    let stale = find("pidfile", "warning").expect("stale pid file reported");
    assert!(
        stale["message"].as_str().unwrap_or_default().contains(&format!("pid {dead_pid} is not running")),
        "{stale}"
    );
    let bad = find("env_file", "error").expect("bad line reported");
    assert!(bad["message"].as_str().unwrap_or_default().starts_with("line 3:"), "{bad}");
    assert_eq!(v["errors"], 1);

    let text = stdout(&run(
        &env,
        &["worker", "diagnose", "--pidfile", &path_str(&pidfile), "--env-file", &path_str(&envfile)],
    ));
    assert!(text.contains("stale") && text.contains("line 3: expected KEY=VALUE"), "{text}");
}

/// Point 9: The worker survives its terminal closing (SIGHUP to the session `start` ran in).
#[test]
fn the_worker_survives_its_terminal_closing() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let marker = env.path("started");
    let script = format!(
        "{} worker start > {} 2>&1; sleep 300",
        rota_testkit::rota_bin().display(),
        path_str(&marker)
    );
    // `script` gives the shell a pseudo-terminal as its controlling terminal; killing
    // `script` closes the terminal, and the kernel sends SIGHUP to that session. Without
    // `script`, the shell runs in a process group of its own that gets the SIGHUP directly.
    let has_script = Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut cmd = if has_script {
        let mut c = Command::new("script");
        c.args(["-qec", &script, "/dev/null"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]).process_group(0);
        c
    };
    rota_testkit::isolate(&mut cmd, &env);
    let mut term =
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("terminal");
    wait_until(bound(), "start in the terminal", || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.contains("started"))
    });
    let (c, before) = status(&env, &[]);
    assert_eq!(c, 0, "{before:#}");
    if has_script {
        let _ = term.kill();
    } else {
        let _ = Command::new("kill").args(["-HUP", "--", &format!("-{}", term.id())]).status();
    }
    let _ = term.wait();
    let shell_gone = || {
        !std::fs::read_dir("/proc").expect("/proc").flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x00300"))
                && std::fs::read(e.path().join("environ"))
                    .is_ok_and(|v| String::from_utf8_lossy(&v).contains(&path_str(&env.path("state"))))
        })
    };
    wait_until(bound(), "the terminal's session to be hung up", shell_gone);
    std::thread::sleep(Duration::from_secs(1));
    let (c, after) = status(&env, &[]);
    assert_eq!(c, 0, "the worker did not survive: {after:#}\nlog:\n{}", log(&env));
    assert_eq!(worker_pid(&after), worker_pid(&before));
    assert_eq!(code(&run(&env, &["worker", "healthcheck"])), 0);
}

/// Not an acceptance test: prints the time from `rota worker start` to its return over 20
/// runs next to spawning the binary with `--version`. Run with
/// `cargo test -p rota-cli --test lifecycle start_latency -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn start_latency() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let mut starts = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..20 {
        let began = Instant::now();
        let o = run(&env, &["worker", "start"]);
        starts.push(began.elapsed());
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
        let began = Instant::now();
        let o = Command::new(rota_testkit::rota_bin()).arg("--version").output().expect("version");
        versions.push(began.elapsed());
        assert!(o.status.success());
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (sm, sx) = stats(&mut starts);
    let (vm, vx) = stats(&mut versions);
    println!("rota worker start (to registered), 20 runs: median {sm:?}, max {sx:?}");
    println!("rota --version, 20 runs:                    median {vm:?}, max {vx:?}");
}

/// Issue 9, point 6: a start whose worker never registered leaves no rota process (neither
/// supervisor nor worker), and its `failed` stays on record for `status` and `heal`.
#[test]
fn a_failed_start_leaves_no_process_behind() {
    let env = Env::new(); // its server URL is a closed port
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start", "--wait-timeout", "3s", "--join-token", "some-token"]);
    assert_ne!(code(&o), 0, "{}", stderr(&o));
    let began = Instant::now();
    wait_until(bound(), "every rota process of the profile to be gone", || rota_procs(&env).is_empty());
    eprintln!("no rota process left {:?} after the failed start returned", began.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    assert!(rota_procs(&env).is_empty(), "a process came back: {:?}", rota_procs(&env));

    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str(), s["running"].as_bool()), (3, Some("failed"), Some(false)), "{s:#}");
    let reason = s["failedReason"].as_str().unwrap_or_default();
    assert!(reason.contains("did not register") && reason.contains("within 3s"), "{s:#}");
    assert!(s["supervisor"].is_null() && s["worker"].is_null(), "{s:#}");
    assert!(s["diagnostic"].as_str().unwrap_or_default().starts_with("Failed"), "{s:#}");
    assert_eq!(code(&run(&env, &["worker", "healthcheck"])), 3, "nothing runs");
    let o = run(&env, &["worker", "heal", "--dry-run"]);
    assert!(stdout(&o).contains("would heal default (failed: "), "{}", stdout(&o));

    // The instance lock is free: the next start begins afresh (and fails the same way).
    let o = run(&env, &["worker", "start", "--wait-timeout", "1s"]);
    assert!(stderr(&o).contains("did not register within 1s"), "{}", stderr(&o));
    wait_until(bound(), "every rota process of the profile to be gone", || rota_procs(&env).is_empty());
}

/// Ownership without `/proc/<pid>/environ` (issue 9): a worker whose supervisor was
/// KILLed keeps draining its step. `diagnose` names it as orphaned and the next `start`
/// stops it, both proving it ours by the state's pid and start time and the free instance
/// lock. (`procs.rs`'s `no_code_reads_a_process_environment` keeps environ reads out.)
#[test]
fn an_orphaned_worker_is_found_by_diagnose_and_stopped_by_start() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    start_json(&env, &["--drain-timeout", "120s"]);
    let (_, s) = status(&env, &[]);
    let sup = s["supervisor"]["pid"].as_i64().expect("supervisor") as i32;
    let worker = worker_pid(&s).expect("worker") as i32;
    let marker = env.path("started");
    submit(&env, &["--step", &format!("s=touch {}; sleep 300", marker.display())]);
    rota_testkit::wait_file_exists(&marker, bound());

    kill("KILL", sup);
    wait_until(bound(), "the supervisor to be gone", || !rota_testkit::pid_alive(sup));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        rota_testkit::pid_alive(worker),
        "the worker drains its step, so it outlives its supervisor for now"
    );

    let o = run(&env, &["--json", "worker", "diagnose"]);
    let v = json(&o);
    let found = v["findings"].as_array().expect("findings").iter().any(|f| {
        f["check"] == "process"
            && f["subject"].as_str() == Some(worker.to_string().as_str())
            && f["message"].as_str().unwrap_or_default().contains("orphaned rota worker process of")
    });
    assert!(found, "the orphaned worker {worker} was not reported: {v:#}");

    let began = Instant::now();
    let v = start_json(&env, &[]);
    assert!(v["notes"].to_string().contains(&format!("stopped worker pid {worker}")), "{v:#}");
    assert!(!rota_testkit::pid_alive(worker), "start must have stopped the orphaned worker");
    eprintln!("start stopped the orphan and started anew in {:?}", began.elapsed());
    assert_eq!(status(&env, &[]).0, 0);
}

/// A settings file written by the release before one settings type (format 1, captured
/// from that binary) is read, rewritten in today's format on first use, and a plain
/// `start` runs the worker it describes: same name, queues, tags and recycling limits.
#[test]
fn a_settings_file_of_the_previous_release_is_upgraded_on_first_use() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let fixture =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../lifecycle/tests/fixtures/settings-v1/profile-ci.json");
    let workspace = env.path("ws-ci");
    let text = std::fs::read_to_string(fixture)
        .expect("fixture")
        .replace("http://10.0.0.5:7777", &env.url)
        .replace("/home/u/.local/state/rota/workers", &path_str(&env.path("state/rota/workers")))
        .replace("/run/user/1000/rota/workers", &path_str(&env.path("runtime/rota/workers")))
        .replace("/srv/ws", &path_str(&workspace));
    let settings = env.path("state/rota/workers/profile-ci.json");
    std::fs::create_dir_all(settings.parent().expect("dir")).expect("state dir");
    std::fs::write(&settings, &text).expect("write the old settings");

    // Read-only commands leave the file as it is.
    let o = run(&env, &["worker", "diagnose"]);
    assert!(!stdout(&o).contains("could not be trusted"), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&settings).expect("settings"), text);

    let o = run(&env, &["worker", "start", "--profile", "ci", "--json"]);
    assert_eq!(code(&o), 0, "{}\nlog:\n{}", stderr(&o), log(&env));
    let started = json(&o);
    assert_eq!(started["name"], "ci-worker", "{started:#}");
    assert!(started["notes"].to_string().contains("upgraded the saved settings"), "{started:#}");
    let now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).expect("settings")).expect("JSON");
    assert_eq!(now["version"], 2);
    let w = &now["worker"];
    assert_eq!(w["queues"], serde_json::json!(["build", "deploy"]));
    assert_eq!(w["tags"], serde_json::json!(["gpu", "linux"]));
    assert_eq!((w["autoscale"]["min"].as_u64(), w["autoscale"]["max"].as_u64()), (Some(2), Some(6)));
    assert_eq!((w["maxJobs"].as_u64(), w["drainTimeout"].as_str()), (Some(500), Some("45s")));
    assert_eq!(now["supervision"]["maxRestarts"], 7);

    // The server sees the worker the old settings describe.
    let (c, st) = status(&env, &["--profile", "ci"]);
    assert_eq!((c, st["server"]["registration"].as_str()), (0, Some("active")), "{st:#}");
    // A second start reuses it: the rewritten file is today's format and unchanged.
    let again = start_json(&env, &["--profile", "ci"]);
    assert_eq!(again["outcome"], "reused", "{again:#}");
    assert!(!again["notes"].to_string().contains("upgraded"), "{again:#}");
    assert!(workspace.is_dir(), "the saved workspace is used");
    assert_eq!(code(&run(&env, &["worker", "stop", "--profile", "ci"])), 0);
}
