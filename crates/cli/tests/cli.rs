//! The `rota` binary end to end: usage errors and their exit codes, the server's start-up
//! contract (URL line, 0600 token files, loopback by default, clean SIGTERM), argv quoting,
//! and the documented `--json` shapes as snapshots (ids and times redacted).

use predicates::prelude::*;
use rota_testkit::{Env, bound, redact, rota, show_json, spawn_server, spawn_worker, submit, wait_for_end};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn write(env: &Env, name: &str, text: &str) -> String {
    let p = env.path(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn usage_errors_exit_2_and_say_what_and_where() {
    let env = Env::new();
    rota(&env)
        .args(["job", "submit", "--bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unexpected argument '--bogus'"));
    rota(&env)
        .args(["job", "submit", "--timeout", "soon", "--", "true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--timeout").and(predicate::str::contains("'soon'")));
    rota(&env)
        .args(["job", "list", "--state", "queued,nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("'nope'").and(predicate::str::contains("unschedulable")));
    rota(&env).args(["job", "show", "not-an-id"]).assert().code(2);
    rota(&env).args(["job", "submit"]).assert().code(2).stderr(predicate::str::contains("nothing to run"));
    // A mistyped worker subcommand is a usage error too (a bad flag of `rota worker run` is 78).
    rota(&env).args(["worker", "lsit"]).assert().code(2).stderr(
        predicate::str::contains("unrecognized subcommand 'lsit'").and(predicate::str::contains("'list'")),
    );
}

/// `--database` (and `ROTA_DATABASE`): another scheme or a malformed URL is a usage error
/// naming the accepted forms; an unreachable PostgreSQL is named with its host and port,
/// never its password; and nothing is created for any of them.
#[test]
fn database_urls_are_checked_and_never_become_files() {
    let env = Env::new();
    let forms = "a SQLite file (PATH or sqlite:PATH) or a PostgreSQL URL";
    for bad in ["mysql://u:hunter2@h/db", "postgres://u:hunter2@h:notaport/db", "sqlite:"] {
        rota(&env)
            .args(["server", "--listen", "127.0.0.1:0", "--database", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(forms).and(predicate::str::contains("hunter2").not()));
    }
    // Nothing listens on port 1: the error names the database and host:port, not the password.
    rota(&env)
        .args(["server", "--listen", "127.0.0.1:0"])
        .env("ROTA_DATABASE", "postgres://u:hunter2@127.0.0.1:1/rota?connect_timeout=5")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("cannot open the PostgreSQL database postgres://u:***@127.0.0.1:1/rota")
                .and(predicate::str::contains("(127.0.0.1:1)"))
                .and(predicate::str::contains("hunter2").not()),
        );
    let made: Vec<_> =
        walk(env.dir.path()).into_iter().filter(|p| p.contains("hunter2") || p.contains("://")).collect();
    assert!(made.is_empty(), "a URL became a file: {made:?}");
}

/// A second server on the same SQLite file is refused (exit 78: a restart would not help),
/// naming who serves it and what several servers need; once the first stops, it starts.
#[test]
fn a_second_server_on_one_sqlite_file_is_refused_naming_the_first() {
    let mut env = spawn_server();
    rota(&env).args(["server", "--listen", "127.0.0.1:0"]).assert().code(78).stderr(
        predicate::str::contains("is already served by another rota server (pid ")
            .and(predicate::str::contains("several servers sharing one control plane need PostgreSQL")),
    );
    assert_eq!(env.stop_server(), Some(0));
    env.start_server(&[]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn invalid_documents_name_file_line_and_column() {
    let env = Env::new();
    let bad_key = write(&env, "job.yaml", "steps:\n  - name: a\n    run: echo\n    bogus: 1\n");
    rota(&env)
        .args(["job", "submit", "-f", &bad_key])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{bad_key}:4:5: unknown field `bogus`")));
    let yes = write(&env, "yes.yaml", "steps:\n  - name: a\n    run: echo\n    keep_workspace: yes\n");
    rota(&env)
        .args(["job", "submit", "-f", &yes])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{yes}:4:")).and(predicate::str::contains("boolean")));
    let json = write(&env, "job.json", "{\n  \"steps\": [\n    {\"name\": \"a\"}\n  ]\n}\n");
    rota(&env)
        .args(["job", "submit", "-f", &json])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{json}:3:")).and(predicate::str::contains("run")));
    let unknown = write(&env, "dag.yaml", "steps:\n  - name: a\n    run: echo\n    needs: [x]\n");
    rota(&env)
        .args(["job", "submit", "-f", &unknown])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("{unknown}:4:13: steps[0].needs[0]: no step named 'x'")));
}

#[test]
fn dag_cycles_are_refused_before_submitting() {
    let env = Env::new();
    rota(&env)
        .args(["job", "submit", "--step", "a=true", "--step", "b=true", "--needs", "a=b", "--needs", "b=a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cycle"));
    rota(&env)
        .args(["job", "submit", "--needs", "nope=main", "--", "true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no step named 'nope'"));
}

#[test]
fn an_unreachable_server_is_named_with_a_hint() {
    let env = Env::new();
    rota(&env).args(["job", "list"]).assert().code(1).stderr(
        predicate::str::contains("cannot reach the rota server at http://127.0.0.1:1")
            .and(predicate::str::contains("rota server / rota dev")),
    );
}

#[test]
fn server_refuses_a_remote_listen_address_without_allow_remote() {
    let env = Env::new();
    rota(&env)
        .args(["server", "--listen", "0.0.0.0:0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--allow-remote"));
}

/// Issue 18: a remote listen address without TLS also needs `--insecure-http`, and the
/// refusal names it (and the TLS flags).
#[test]
fn server_refuses_a_remote_plain_http_listen_address_without_insecure_http() {
    let env = Env::new();
    rota(&env)
        .args(["server", "--listen", "0.0.0.0:0", "--allow-remote"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--insecure-http").and(predicate::str::contains("--tls-cert")));
}

#[test]
fn server_creates_private_tokens_once_and_stops_cleanly() {
    let mut env = spawn_server();
    // The token lines follow the "listening" line the harness waits for; give the reader
    // thread a moment to capture them on a loaded machine.
    let start = std::time::Instant::now();
    while !env.server_log().contains("join token") && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = env.server_log();
    let admin = env.data_dir().join("admin.token");
    let join = env.data_dir().join("join.token");
    for f in [&admin, &join] {
        let mode = std::fs::metadata(f).expect("token file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        assert!(
            log.contains(&f.display().to_string()),
            "server does not say where {} is:\n{log}",
            f.display()
        );
    }
    let token = std::fs::read_to_string(&admin).expect("admin.token");
    assert!(!log.contains(token.trim()), "the server printed its admin token");
    assert_eq!(env.stop_server(), Some(0), "SIGTERM should stop the server with exit 0");
    // A second start reuses the tokens.
    env.start_server(&[]);
    assert_eq!(env.stop_server(), Some(0));
    assert_eq!(std::fs::read_to_string(&admin).expect("admin.token"), token);
}

#[test]
fn unknown_jobs_are_reported_by_id() {
    let env = spawn_server();
    let id = "01900000-0000-7000-8000-000000000000";
    rota(&env)
        .args(["job", "show", id])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("no job {id}")));
}

#[test]
fn argv_after_dashes_is_quoted_into_one_step() {
    let env = spawn_server();
    let id = submit(&env, &["--", "sh", "-c", r#"printf '%s\n' "$X" 'it'"'"'s'"#]);
    let job = show_json(&env, &id);
    let run = job["spec"]["steps"][0]["run"].as_str().expect("run");
    assert_eq!(job["spec"]["steps"][0]["name"], "main");
    // The shell splits the stored script back into exactly the words given.
    let words = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("for w in {}; do printf '<%s>' \"$w\"; done", run))
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&words.stdout),
        r#"<sh><-c><printf '%s\n' "$X" 'it'"'"'s'>"#,
        "stored run: {run}"
    );
}

#[test]
fn quoted_argv_runs_as_given() {
    let env = spawn_server();
    let _worker = spawn_worker(&env, "w1", &["--concurrency", "2"]);
    let id = submit(&env, &["--env", "X=a  b \"c\" $d", "--", "sh", "-c", r#"echo "$X"; echo "it's""#]);
    let job = wait_for_end(&env, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    rota(&env).args(["job", "logs", &id]).assert().success().stdout("a  b \"c\" $d\nit's\n");
}

#[test]
fn submit_wait_exits_with_the_jobs_outcome() {
    let env = spawn_server();
    let _worker = spawn_worker(&env, "w1", &[]);
    rota(&env).args(["job", "submit", "--wait", "--", "true"]).assert().success();
    rota(&env)
        .args(["job", "submit", "--wait", "--", "sh", "-c", "exit 3"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("failed"));
}

#[test]
fn json_shapes_of_submit_list_show() {
    let env = spawn_server();
    let _worker = spawn_worker(&env, "w1", &[]);
    let out = rota(&env)
        .args(["job", "submit", "--json", "--name", "hello", "--", "echo", "hi"])
        .output()
        .expect("submit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut submitted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = submitted["id"].as_str().expect("id").to_string();
    redact(&mut submitted);
    insta::assert_json_snapshot!("submit", submitted);

    wait_for_end(&env, &id);
    let out = rota(&env).args(["job", "list", "--json"]).output().expect("list");
    assert!(out.status.success());
    let mut list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    redact(&mut list);
    insta::assert_json_snapshot!("list", list);

    let mut show = show_json(&env, &id);
    redact(&mut show);
    insta::assert_json_snapshot!("show", show);

    rota(&env).args(["job", "logs", &id]).assert().success().stdout("hi\n");
    rota(&env)
        .args(["job", "list"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ID").and(predicate::str::contains("succeeded")));
}

#[test]
fn a_refused_join_token_exits_78() {
    let env = spawn_server();
    let mut cmd = rota(&env);
    cmd.args(["worker", "run", "--join-token", "wrong", "--workspace"]).arg(env.path("ws"));
    cmd.timeout(bound()).assert().code(78);
}

#[test]
fn completions_are_generated() {
    let env = Env::new();
    rota(&env).args(["completions", "bash"]).assert().success().stdout(predicate::str::contains("rota"));
}

#[test]
fn a_worker_without_a_join_token_exits_78() {
    let env = Env::new();
    rota(&env)
        .args(["worker", "--workspace"])
        .arg(env.path("ws"))
        .assert()
        .code(78)
        .stderr(predicate::str::contains("no join token"));
    rota(&env).args(["worker", "--concurrency", "0"]).assert().code(78);
}

#[test]
fn sigterm_drains_the_worker_and_it_exits_0() {
    let env = spawn_server();
    let mut worker = spawn_worker(&env, "w1", &["--drain-timeout", "60s"]);
    let marker = env.path("started");
    let script = format!("touch {}; sleep 1; echo drained", marker.display());
    let id = submit(&env, &["--step", &format!("s={script}")]);
    rota_testkit::wait_file_exists(&marker, bound());
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(bound()), Some(0), "worker output:\n{}", worker.output());
    let job = wait_for_end(&env, &id);
    assert_eq!(job["state"], "succeeded", "the running step should finish during the drain: {job:#}");
    rota(&env).args(["job", "logs", &id]).assert().success().stdout("drained\n");
}

#[test]
fn follow_logs_until_the_job_ends_then_cancel_and_retry() {
    let env = spawn_server();
    let _worker = spawn_worker(&env, "w1", &[]);
    let id = submit(&env, &["--", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done"]);
    rota(&env).args(["job", "logs", "-f", &id]).assert().success().stdout("line 1\nline 2\nline 3\n");

    let id = submit(&env, &["--", "sleep", "300"]);
    rota_testkit::wait_for_state(&env, &id, &["running"], bound());
    rota(&env)
        .args(["job", "cancel", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains(&id).and(predicate::str::contains("cancelled")));
    let job = wait_for_end(&env, &id);
    assert_eq!(job["state"], "cancelled");
    // Retry is refused while the cancelled attempt is still being stopped.
    let start = std::time::Instant::now();
    while show_json(&env, &id)["stepDetails"][0]["attempts"][0]["finishedAt"].is_null() {
        assert!(start.elapsed() < bound(), "the cancelled attempt never ended");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = rota(&env).args(["job", "retry", &id, "--json"]).output().expect("retry");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["id"], id.as_str());
    assert!(["queued", "running"].contains(&summary["state"].as_str().unwrap_or_default()), "{summary:#}");
    rota(&env).args(["job", "cancel", &id]).assert().success();
}

#[test]
fn dev_runs_jobs_and_stops_on_ctrl_c() {
    let mut env = Env::new();
    let mut cmd = std::process::Command::new(rota_testkit::rota_bin());
    rota_testkit::isolate(&mut cmd, &env);
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--concurrency", "2"]);
    let (mut dev, _) = rota_testkit::Proc::spawn(cmd, "rota job list");
    let banner = dev.output();
    let url = banner
        .lines()
        .find_map(|l| l.strip_prefix("rota server listening on "))
        .expect("listening line")
        .to_string();
    assert!(banner.contains("rota job submit -- echo hello"), "{banner}");
    env.url = url;
    rota(&env).args(["job", "submit", "--wait", "--", "echo", "hello"]).assert().success();
    dev.signal("INT");
    assert_eq!(dev.wait_exit(bound()), Some(0), "{}", dev.output());
}

#[test]
fn a_second_sigterm_stops_the_worker_and_its_steps_now() {
    let env = spawn_server();
    let mut worker = spawn_worker(&env, "w1", &["--drain-timeout", "1h"]);
    let pidfile = env.path("step.pid");
    submit(&env, &["--step", &format!("s=echo $$ > {}; sleep 600", pidfile.display())]);
    let pid: i32 = rota_testkit::wait_file(&pidfile, bound()).parse().expect("pid");
    worker.signal("TERM");
    // Pending signals of one kind merge: the second TERM is sent only once the worker has
    // taken the first (it says so), else both may count as one and it would drain for 1h.
    let start = std::time::Instant::now();
    while !worker.output().contains("signal: shutting down") {
        assert!(start.elapsed() < bound(), "the worker never took the first SIGTERM:\n{}", worker.output());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(rota_testkit::pid_alive(pid), "the first SIGTERM should let the step run on");
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(bound()), Some(1), "{}", worker.output());
    let start = std::time::Instant::now();
    while rota_testkit::pid_alive(pid) {
        assert!(start.elapsed() < bound(), "step {pid} survived the worker's hard stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
