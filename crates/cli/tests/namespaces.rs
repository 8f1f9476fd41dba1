//! Namespaces end to end (issue 15, acceptance 3), on both backends, with real worker
//! processes: two namespaces on one server, each with a worker named `w1` and a workflow
//! named `deploy`; each run goes to its own namespace's worker; `worker ping --namespace a`
//! answers for a's worker only; a revoke in `a` cannot touch a job of `b`; listings stay in
//! their namespace unless `--all-namespaces`. Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::{Backend, Env, Proc, both_backends, bound, isolate, rota, rota_bin};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Instant;

/// `rota --namespace NS ARGS...`.
fn in_ns(env: &Env, ns: &str, args: &[&str]) -> Output {
    rota(env).arg("--namespace").arg(ns).args(args).output().unwrap()
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "{:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// A worker called `w1` in namespace `ns`, with a workspace of its own.
fn worker_in(env: &Env, ns: &str) -> Proc {
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, env);
    cmd.args(["worker", "run", "--name", "w1", "--namespace", ns, "--concurrency", "2", "--workspace"])
        .arg(env.path(&format!("ws-{ns}")));
    Proc::spawn(cmd, "rota worker ready").0
}

/// Waits until job `id` of namespace `ns` has ended; its `job show --json`.
fn ended(env: &Env, ns: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = json(&in_ns(env, ns, &["job", "show", id, "--json"]));
        if ["succeeded", "failed", "cancelled", "revoked"].contains(&v["state"].as_str().unwrap_or("")) {
            eprintln!("job {id} of {ns} ended after {:?}", start.elapsed());
            return v;
        }
        assert!(start.elapsed() < bound(), "job {id} of {ns} did not end: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn logs(env: &Env, ns: &str, id: &str) -> String {
    let o = in_ns(env, ns, &["job", "logs", id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

both_backends!(async fn two_namespaces_keep_their_workers_workflows_and_jobs_apart);
async fn two_namespaces_keep_their_workers_workflows_and_jobs_apart(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let _a = worker_in(&env, "a");
    let _b = worker_in(&env, "b");

    // The same workflow name in both namespaces, each saying where it is.
    for ns in ["a", "b"] {
        let file = env.path(&format!("wf-{ns}.yaml"));
        std::fs::write(
            &file,
            format!(
                "kind: Workflow\nmetadata: {{name: deploy}}\nspec:\n  steps:\n    - name: s\n      run: echo deploy-of-{ns}; pwd\n"
            ),
        )
        .unwrap();
        let o = in_ns(&env, ns, &["apply", "-f", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "workflows/deploy created\n");
    }
    // A manifest naming its namespace lands there whatever the flag says... unless the flag
    // names another one: refused, naming both.
    let clash = env.path("clash.yaml");
    std::fs::write(
        &clash,
        "kind: Workflow\nmetadata: {name: x, namespace: b}\nspec:\n  steps: [{name: s, run: 'true'}]\n",
    )
    .unwrap();
    let o = in_ns(&env, "a", &["apply", "-f", clash.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("namespace"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Each run goes to its own namespace's w1: the step runs in that worker's workspace.
    for ns in ["a", "b"] {
        let started = json(&in_ns(&env, ns, &["run", "deploy", "--json"]));
        let id = started["id"].as_str().unwrap().to_string();
        let end = ended(&env, ns, &id);
        assert_eq!(end["state"], "succeeded", "{end}");
        assert_eq!(end["namespace"], ns, "{end}");
        let out = logs(&env, ns, &id);
        assert!(out.contains(&format!("deploy-of-{ns}")), "{out}");
        assert!(out.contains(&format!("ws-{ns}/")), "ran on {ns}'s worker: {out}");
        let other = if ns == "a" { "b" } else { "a" };
        // Another namespace does not see the job.
        let o = in_ns(&env, other, &["job", "show", &id, "--json"]);
        assert!(!o.status.success(), "{other} sees {ns}'s job");
    }

    // Ping in `a` answers for a's w1 only: one reply while two live workers are called w1
    // (b's answers ping in `b`); `default` has none.
    // (No reply at all exits 1: the JSON is still printed.)
    let ping = |ns: &str| -> Value {
        serde_json::from_slice(&in_ns(&env, ns, &["worker", "ping", "--json"]).stdout).unwrap()
    };
    let (pa, pb, pd) = (ping("a"), ping("b"), ping("default"));
    for p in [&pa, &pb] {
        assert_eq!(p["replies"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["replies"][0]["worker"], "w1", "{p}");
        assert_eq!(p["noReply"].as_array().map_or(0, Vec::len), 0, "{p}");
    }
    assert!(pd["replies"].as_array().unwrap().is_empty(), "{pd}");

    // A revoke in `a` cannot touch a job of `b`.
    let o = in_ns(&env, "b", &["job", "submit", "--json", "--", "sleep", "30"]);
    let id = json(&o)["id"].as_str().unwrap().to_string();
    let o = in_ns(&env, "a", &["worker", "revoke", &id, "--terminate"]);
    assert!(!o.status.success(), "a revoke in a reached b's job");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("namespace"), "{err}");
    let v = json(&in_ns(&env, "b", &["job", "show", &id, "--json"]));
    assert!(["queued", "running"].contains(&v["state"].as_str().unwrap()), "{v}");
    // In its own namespace it can.
    let o = in_ns(&env, "b", &["worker", "revoke", &id, "--terminate"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ended(&env, "b", &id)["state"], "revoked");

    // A secret belongs to its namespace: a's job reads it, b's job cannot name it.
    let o = in_ns(&env, "a", &["secret", "create", "api", "--from-literal", "token=value-of-a-123"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = |ns: &str| {
        let file = env.path(&format!("secret-job-{ns}.yaml"));
        std::fs::write(
            &file,
            "env: {T: {secret: api/token}}\nsteps:\n  - name: s\n    run: test \"$T\" = value-of-a-123 && echo same\n",
        )
        .unwrap();
        in_ns(&env, ns, &["job", "submit", "--json", "-f", file.to_str().unwrap()])
    };
    let id = json(&job("a"))["id"].as_str().unwrap().to_string();
    let end = ended(&env, "a", &id);
    assert_eq!(end["state"], "succeeded", "{end}");
    assert!(logs(&env, "a", &id).contains("same"));
    let refused = job("b");
    assert!(!refused.status.success(), "b's job named a's secret");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("api"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let o = in_ns(&env, "b", &["get", "secret", "api"]);
    assert!(!o.status.success(), "b sees a's secret");

    // Listings: one namespace, or every one with --all-namespaces.
    let a_jobs = json(&in_ns(&env, "a", &["job", "list", "--json"]));
    assert!(a_jobs["jobs"].as_array().unwrap().iter().all(|j| j["namespace"] == "a"), "{a_jobs}");
    let all = json(&rota(&env).args(["job", "list", "--all-namespaces", "--json"]).output().unwrap());
    let namespaces: std::collections::BTreeSet<&str> =
        all["jobs"].as_array().unwrap().iter().map(|j| j["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces.into_iter().collect::<Vec<_>>(), ["a", "b"], "{all}");
    let default_jobs = json(&rota(&env).args(["job", "list", "--json"]).output().unwrap());
    assert!(default_jobs["jobs"].as_array().unwrap().is_empty(), "{default_jobs}");
    let wf = json(&rota(&env).args(["get", "workflows", "--all-namespaces", "-o", "json"]).output().unwrap());
    assert_eq!(wf["items"].as_array().unwrap().len(), 2, "{wf}");
    let bad = rota(&env).args(["--namespace", "Not_OK", "job", "list"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}
