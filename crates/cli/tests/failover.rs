//! Workers and the CLI given several servers (issue 12, "Several servers", second bullet):
//! a worker whose server is killed -9 finishes its running step through another server of
//! the control plane; the CLI skips a server that is down; every submit carries an
//! idempotency key, so a submit sent again (to another server) yields one job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::postgres::TestDb;
use rota_testkit::{
    Env, bound, rota, server, show_json, spawn_server, spawn_worker, submit, wait_for_end, wait_for_state,
};
use serde_json::Value;

/// A port on loopback nothing listens on (connection refused at once).
const DOWN: &str = "127.0.0.1:1";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_finishes_its_running_step_through_b_when_a_is_killed() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    let a = env.url.clone();
    let b = server::start_beside(&env, &db.url);
    // Every command of this tree, the worker included, gets ROTA_SERVER=A,B.
    env.url = format!("{a},{}", b.url);
    let mut worker = spawn_worker(&env, "wf", &[]);

    let id = submit(&env, &["--", "sh", "-c", "echo started; sleep 4; echo finished"]);
    wait_for_state(&env, &id, &["running"], bound());
    env.kill_server();
    eprintln!("killed A ({a}); B is {}", b.url);

    let end = wait_for_end(&env, &id);
    assert_eq!(end["state"], "succeeded", "{end:#}\nworker:\n{}", worker.output());
    let attempts = end["stepDetails"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "the running step was not dropped: {end:#}");
    assert_eq!(attempts[0]["worker"], "wf");
    // Its output, buffered across the switch, is all there (read through B).
    let out = rota(&env).args(["--server", &b.url, "job", "logs", &id]).output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("started") && logs.contains("finished"), "{logs}\n{}", stderr(&out));
    // The worker carried on: it is still running, and runs the next job through B.
    assert!(rota_testkit::pid_alive(worker.pid()), "the worker exited: {}", worker.output());
    let next = submit(&env, &["--", "true"]);
    assert_eq!(wait_for_end(&env, &next)["state"], "succeeded");
    worker.terminate(bound());
    drop(b);
}

#[test]
fn the_cli_skips_a_server_that_is_down() {
    let env = spawn_server();
    let live = env.url.clone();
    // `--server` repeated, the first one down.
    let out = rota(&env)
        .args(["--server", DOWN, "--server", &live, "job", "submit", "--json", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(submitted["created"], true);
    let id = submitted["id"].as_str().unwrap().to_string();

    // ROTA_SERVER as a comma-separated list, the first one down.
    let out = rota(&env)
        .env("ROTA_SERVER", format!("{DOWN},{live}"))
        .args(["job", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list["jobs"].as_array().unwrap().iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()]);

    // Every server down: the error names each one.
    let out = rota(&env).args(["--server", DOWN, "--server", "127.0.0.1:2", "job", "list"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"), "{err}");
}

#[test]
fn a_bad_server_entry_is_a_usage_error_naming_it() {
    let env = Env::new();
    for (args, env_list, named) in [
        (vec!["--server", "a:7777", "--server", "ftp://b"], None, "ftp://b"),
        (vec![], Some("a:7777,b:notaport"), "b:notaport"),
        (vec![], Some("a:7777,,b:7777"), "entry 2"),
    ] {
        let mut cmd = rota(&env);
        if let Some(list) = env_list {
            cmd.env("ROTA_SERVER", list);
        }
        let out = cmd.args(&args).args(["job", "list"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env_list:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{args:?} {env_list:?}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_submit_carries_a_key_so_a_resent_one_is_the_same_job() {
    let env = spawn_server();
    let id = submit(&env, &["--name", "once", "--", "true"]);
    // The key the CLI chose is the job's.
    let job = show_json(&env, &id);
    let key = job["spec"]["idempotency_key"].as_str().unwrap_or_else(|| panic!("no key: {job:#}"));
    assert_eq!(uuid::Uuid::parse_str(key).unwrap().get_version_num(), 7, "{key}");

    // The same submit sent again with that key (as the client does to another server when
    // the first answer is lost) is the same job.
    let token = std::fs::read_to_string(env.data_dir().join("admin.token")).unwrap();
    let client = rota_client::Client::new(&format!("{DOWN},{}", env.url), Some(token.trim().into())).unwrap();
    let spec: rota_domain::JobSpec = serde_json::from_value(job["spec"].clone()).unwrap();
    let again = client.submit(&spec, Some(key)).await.unwrap();
    assert_eq!(again.id.to_string(), id);
    assert!(!again.created, "a second job was created");
    let all = client.list_jobs(&Default::default()).await.unwrap();
    assert_eq!(all.jobs.len(), 1, "{:?}", all.jobs);

    // A key of the user's own still wins, and is reported as already known on replay.
    let first = submit(&env, &["--idempotency-key", "nightly-1", "--", "true"]);
    let out = rota(&env)
        .args(["job", "submit", "--json", "--idempotency-key", "nightly-1", "--", "true"])
        .output()
        .unwrap();
    let replay: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((replay["id"].as_str(), &replay["created"]), (Some(first.as_str()), &Value::Bool(false)));
}
