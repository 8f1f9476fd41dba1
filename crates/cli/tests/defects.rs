//! Issue 10, point 6: the smaller defects, one named test each, against real processes (a
//! real `rota server` on port 0, real workers and supervisors, an isolated HOME/XDG tree per
//! test). Bounds derive from the test cluster's lease settings, with wide margins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::{Cleanup, code, json, log, run, run_with_env, status, stderr, stdout};
use rota_testkit::procs::kill;
use rota_testkit::{Env, bound, rota, spawn_server, spawn_worker, submit, wait_for_state, wait_until};
use std::time::{Duration, Instant};

/// Defect 1: `job logs -f --headers` started while the first step runs announces that step too.
#[test]
fn logs_follow_with_headers_announces_the_first_step() {
    let env = spawn_server();
    let _w = spawn_worker(&env, "w1", &[]);
    let id = submit(&env, &["--step", "a=sleep 2; echo a", "--step", "b=echo b", "--needs", "b=a"]);
    let began = Instant::now();
    let out = rota(&env).args(["job", "logs", &id, "-f", "--headers"]).output().expect("rota job logs");
    eprintln!("logs -f returned after {:?}", began.elapsed());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(o, "a\nb\n", "stdout holds the output only");
    assert!(e.contains("==> step a (attempt 1) <=="), "the first step's header is missing:\n{e}");
    assert!(e.contains("==> step b (attempt 1) <=="), "{e}");
}

/// Defect 2: A server started after only `join.token` was deleted says it created the join token
/// and reused the admin token. Since issue 11 the store holds the tokens' hashes and a token
/// is generated only when it holds none of that kind: its join row goes too.
#[test]
fn deleting_only_the_join_token_says_which_token_was_created() {
    let mut env = spawn_server();
    assert_eq!(env.stop_server(), Some(0));
    std::fs::remove_file(env.data_dir().join("join.token")).expect("rm join.token");
    rusqlite::Connection::open(env.data_dir().join("rota.db"))
        .and_then(|c| c.execute("DELETE FROM credentials WHERE kind = 'join'", []))
        .expect("forget the stored join token");
    env.start_server(&[]);
    let start = Instant::now();
    while !(env.server_log().contains("admin token") && env.server_log().contains("join token")) {
        assert!(start.elapsed() < bound(), "token lines missing:\n{}", env.server_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = env.server_log();
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_string();
    let (admin, join) = (line("admin token"), line("join token"));
    assert!(join.contains("created now"), "the join token was created: {join}\n{text}");
    assert!(
        !admin.contains("created now") && admin.contains("reused"),
        "the admin token was reused: {admin}"
    );
}

/// Defect 3: a result delivered after a server outage records the step's own run time, not
/// the time between its start and the server receiving the result.
#[test]
fn a_result_delivered_after_an_outage_keeps_the_steps_own_duration() {
    // Leases longer than the outage: the step is not lost, its result only arrives late.
    let (heartbeat, ttl) = (Duration::from_millis(500), Duration::from_secs(15));
    let mut env = Env::new();
    env.start_server_at("127.0.0.1", heartbeat, ttl, &[]);
    let _w = spawn_worker(&env, "w1", &[]);
    let (started, done) = (env.path("started"), env.path("done"));
    let id = submit(
        &env,
        &["--step", &format!("s=touch {}; sleep 1; touch {}", started.display(), done.display())],
    );
    rota_testkit::wait_file_exists(&started, bound());
    assert_eq!(env.stop_server(), Some(0));
    let down = Instant::now();
    rota_testkit::wait_file_exists(&done, bound());
    // The step has ended while no server was there to hear it.
    std::thread::sleep(Duration::from_secs(5));
    // The same address again, so that the worker finds it.
    let mut cmd = std::process::Command::new(rota_testkit::rota_bin());
    rota_testkit::isolate(&mut cmd, &env);
    cmd.args(["server", "--listen", env.url.trim_start_matches("http://")])
        .arg("--heartbeat-interval")
        .arg(format!("{}ms", heartbeat.as_millis()))
        .arg("--lease-ttl")
        .arg(format!("{}ms", ttl.as_millis()));
    let _server = rota_testkit::Proc::spawn(cmd, "rota server listening on ");
    let outage = down.elapsed();
    let job = wait_for_state(&env, &id, &["succeeded", "failed"], bound());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let a = &job["stepDetails"][0]["attempts"][0];
    let time = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(a[k].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{k}: {e}: {a}"))
    };
    let took = (time("finishedAt") - time("startedAt")).to_std().expect("non-negative");
    eprintln!("step ran for {took:?}; the server was down for {outage:?}");
    assert!(took < outage, "the recorded duration {took:?} includes the {outage:?} outage");
}

/// Defect 4: `worker diagnose` in one home does not report another home's background worker
/// (same user, same `rota worker supervise --key default` command line) as its orphan.
#[test]
fn diagnose_claims_no_process_of_another_home() {
    let a = spawn_server();
    let _cleanup = Cleanup::new(&a);
    let o = run(&a, &["worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sup = json(&o)["supervisorPid"].as_i64().expect("supervisor pid");
    let b = Env::new();
    for env in [&b, &a] {
        let o = run(env, &["--json", "worker", "diagnose"]);
        let v = json(&o);
        let procs: Vec<_> =
            v["findings"].as_array().expect("findings").iter().filter(|f| f["check"] == "process").collect();
        assert!(
            procs.is_empty(),
            "no process of this home is orphaned (supervisor of home A: {sup}): {procs:#?}"
        );
    }
}

/// Defect 5: `worker start --json` that fails prints the failure as JSON on stdout and keeps its
/// exit code.
#[test]
fn start_json_prints_the_failure_on_stdout() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start", "--json", "--join-token", "wrong"]);
    assert_ne!(code(&o), 0);
    assert!(!stdout(&o).trim().is_empty(), "stdout is empty; stderr:\n{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["outcome"], "failed", "{v:#}");
    assert_eq!(v["exitCode"].as_i64(), Some(i64::from(code(&o))), "{v:#}");
    assert!(v["error"].as_str().unwrap_or_default().contains("refused at once"), "{v:#}");
    assert_eq!(v["logPath"].as_str(), Some(env.path("state/rota/workers/default.log").to_str().unwrap()));
    assert!(v["foregroundCommand"].as_str().is_some_and(|c| c.contains("worker run")), "{v:#}");
    assert!(!stdout(&o).contains("wrong"), "the token must not be printed");
}

/// Defect 6: A foreground `worker run --log-file` writes its own file, never the background
/// worker's `default.log`.
#[test]
fn foreground_log_file_stays_out_of_the_background_log() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut fg = spawn_worker(&env, "fg", &["--log-file"]);
    // Only the foreground worker drains: its "draining" line tells its log apart.
    assert_eq!(fg.terminate(bound()), Some(0));
    let own =
        std::fs::read_to_string(env.path("state/rota/workers/default.foreground.log")).unwrap_or_default();
    assert!(own.contains("draining"), "the foreground worker's own log:\n{own}");
    let background = log(&env);
    assert!(!background.contains("draining"), "the foreground worker wrote into default.log:\n{background}");
}

/// Defect 7: A second corrupt state file does not overwrite the first quarantined one.
#[test]
fn a_second_corrupt_state_file_keeps_the_first() {
    let env = Env::new();
    let workers = env.path("state/rota/workers");
    std::fs::create_dir_all(&workers).expect("mkdir");
    for bad in ["{first garbage", "{second garbage"] {
        std::fs::write(workers.join("default.state.json"), bad).expect("write");
        let (c, s) = status(&env, &[]);
        assert_eq!(c, 3, "{s:#}");
        assert!(s["warnings"].to_string().contains("could not be trusted"), "{s:#}");
        // Distinct names even within one clock tick are the code's job, not the test's.
    }
    let mut kept: Vec<String> = std::fs::read_dir(&workers)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("default.state.json.") && n.ends_with(".corrupt"))
        .map(|n| std::fs::read_to_string(workers.join(n)).expect("read"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["{first garbage", "{second garbage"], "both corrupt files are kept");
}

/// Defect 8: A failed `rota server start` speaks of the server, not of a worker.
#[test]
fn a_failed_server_start_speaks_of_the_server() {
    let env = Env::new();
    let _cleanup = Cleanup::new(&env);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let o = run(&env, &["server", "start", "--listen", &addr, "--wait-timeout", "20s"]);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains("the server stopped before it listened"), "{err}");
    assert!(!err.contains("the worker") && !err.contains("registered"), "{err}");
}

/// Defect 9: After its supervisor is killed, a worker that still runs (draining its step) is shown
/// as running unsupervised, not "Not running". Chosen over stopping it at once: losing the
/// supervisor is a fault of the tooling, not of the work, and killing the steps would turn
/// it into lost and re-run steps (twice for a step that must run once).
#[test]
fn a_worker_whose_supervisor_was_killed_is_shown_running_unsupervised() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let o = run(&env, &["worker", "start", "--json", "--drain-timeout", "120s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (_, s) = status(&env, &[]);
    let sup = s["supervisor"]["pid"].as_i64().expect("supervisor") as i32;
    let worker = s["worker"]["pid"].as_i64().expect("worker") as i32;
    let marker = env.path("started");
    submit(&env, &["--step", &format!("s=touch {}; sleep 300", marker.display())]);
    rota_testkit::wait_file_exists(&marker, bound());

    kill("KILL", sup);
    wait_until(bound(), "the supervisor to be gone", || !rota_testkit::pid_alive(sup));
    let (c, s) = status(&env, &[]);
    assert!(rota_testkit::pid_alive(worker), "the worker drains its step, so it still runs");
    eprintln!("status after the supervisor's death: exit {c}, {}", s["diagnostic"]);
    assert_eq!((s["state"].as_str(), s["running"].as_bool()), (Some("unsupervised"), Some(true)), "{s:#}");
    assert_eq!(s["worker"]["pid"].as_i64(), Some(i64::from(worker)), "{s:#}");
    assert_eq!(c, 1, "degraded, not 'not running': {s:#}");
    let diag = s["diagnostic"].as_str().unwrap_or_default();
    assert!(diag.contains("Unsupervised") && !diag.contains("Not running"), "{diag}");
}

/// Defect 10: A hard shutdown logs that it kills the running steps, not that it lets them finish.
#[test]
fn a_hard_shutdown_says_it_kills_the_running_steps() {
    let env = spawn_server();
    let mut w = spawn_worker(&env, "w1", &[]);
    let marker = env.path("started");
    submit(&env, &["--step", &format!("s=touch {}; sleep 300", marker.display())]);
    rota_testkit::wait_file_exists(&marker, bound());
    w.signal("QUIT");
    w.wait_exit(bound());
    let out = w.output();
    assert!(out.contains("hard shutdown: no more claims, killing the running steps"), "{out}");
    assert!(!out.contains("letting running steps finish"), "{out}");
}

/// Defect 11: A revoked job never shows one of its steps as `running`: the step shows the job's
/// end at once, while its attempt (left to finish, no `--terminate`) is shown running.
#[test]
fn a_revoked_job_never_shows_a_running_step() {
    let env = spawn_server();
    let w = spawn_worker(&env, "w1", &[]);
    let marker = env.path("started");
    let id = submit(
        &env,
        &[
            "--step",
            &format!("s=touch {}; sleep 300", marker.display()),
            "--step",
            "t=true",
            "--needs",
            "t=s",
        ],
    );
    rota_testkit::wait_file_exists(&marker, bound());
    let o = rota(&env).args(["worker", "revoke", &id]).output().expect("revoke");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = wait_for_state(&env, &id, &["revoked"], bound());
    let steps = job["stepDetails"].as_array().expect("steps");
    for s in steps {
        assert_ne!(s["state"], "running", "the job is revoked but a step is running: {job:#}");
    }
    let s = steps.iter().find(|s| s["name"] == "s").expect("step s");
    assert_eq!(s["state"], "revoked", "{job:#}");
    assert_eq!(s["attempts"][0]["status"], "running", "its attempt was left to finish: {job:#}");
    assert!(job["finishedAt"].is_null(), "the job has not finished while an attempt runs: {job:#}");
    drop(w);
}

/// Defect 12: The background worker's log is rotated by size, keeping a bounded number of files.
#[test]
fn the_background_log_is_rotated_by_size() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let vars = [("ROTA_LOG_MAX_SIZE", "2KiB"), ("ROTA_LOG_KEEP", "2"), ("ROTA_LOG", "debug")];
    let o = run_with_env(&env, &["worker", "start"], &vars);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let dir = env.path("state/rota/workers");
    let began = Instant::now();
    let deadline = bound() * 2;
    while !dir.join("default.log.2").exists() {
        assert!(
            began.elapsed() < deadline,
            "no second rotation within {deadline:?}; files: {:?}",
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        submit(&env, &["--", "true"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("two rotations after {:?}", began.elapsed());
    // More output: still rotated into the same two copies, never a third.
    let first = std::fs::read(dir.join("default.log.1")).expect("log.1");
    let began = Instant::now();
    while std::fs::read(dir.join("default.log.1")).is_ok_and(|now| now == first) {
        assert!(began.elapsed() < deadline, "no further rotation within {deadline:?}");
        submit(&env, &["--", "true"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!dir.join("default.log.3").exists(), "only ROTA_LOG_KEEP=2 rotated copies are kept");
    assert_eq!(status(&env, &[]).0, 0, "the worker keeps running and logging");
}
