//! Acceptance of fleet control (issue 4), end to end: real `rota server` and `rota worker`
//! processes. Replies, revokes, shutdown modes, autoscaling, recycling, memory limits and
//! paused queues, with bounds derived from the cluster's lease settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::cluster::{Cluster, Timing, wait_file};
use rota_testkit::procs::{group_members, wait_gone};
use rota_testkit::{pid_alive, wait_for};
use std::time::{Duration, Instant};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_names_the_worker_that_does_not_answer() {
    let c = Cluster::start(Timing::FAST).await;
    let _a = c.worker("alpha", 1).await;
    let b = c.worker("beta", 1).await;
    let _g = c.worker("gamma", 1).await;
    let out = c.rota().args(["--json", "worker", "ping", "--timeout", "10s"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let names: Vec<&str> =
        v["replies"].as_array().unwrap().iter().map(|r| r["worker"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    b.signal("STOP");
    // How long the stopped worker is waited for: the others must answer within it, on a
    // loaded machine too.
    let silence = format!("{}ms", (c.timing.ttl * 2).as_millis());
    let out = c.rota().args(["--json", "worker", "ping", "--timeout", &silence]).output().unwrap();
    b.signal("CONT");
    assert_eq!(out.status.code(), Some(1), "a silent worker makes ping exit 1");
    let v = json(&out);
    let names: Vec<&str> =
        v["replies"].as_array().unwrap().iter().map(|r| r["worker"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "gamma"]);
    assert_eq!(v["noReply"][0]["worker"], "beta");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_terminate_kills_the_group_and_revokes_hold_across_restarts() {
    let mut c = Cluster::start(Timing::FAST).await;
    let w = c.worker("w1", 1).await;
    let m = c.path("rv");
    std::fs::create_dir_all(&m).unwrap();
    let m = m.display().to_string();
    let run = format!("echo $$ > {m}/leader; (sleep 300 & echo $! > {m}/gc; wait) & wait");
    let id = c.submit_step(&run);
    let leader: i32 = wait_file(&c.path("rv/leader"), c.timing.bound()).await.parse().unwrap();
    let gc: i32 = wait_file(&c.path("rv/gc"), c.timing.bound()).await.parse().unwrap();
    let start = Instant::now();
    let out = c.rota().args(["worker", "revoke", "--terminate", &id.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Grace is the worker's kill grace (5 s by default), plus a margin.
    wait_gone(leader, &[leader, gc], Duration::from_secs(5) + c.timing.bound()).await;
    let gone_after = start.elapsed();
    c.wait_state(id, &["revoked"], c.timing.bound()).await;
    assert!(group_members(leader).is_empty());
    eprintln!("revoke --terminate → processes gone in {gone_after:?}");

    // A queued job revoked before any worker could take it: stays revoked across a server
    // restart and is not run by a worker started afterwards.
    drop(w);
    let queued = c.submit_file("steps:\n  - name: s\n    run: echo must-not-run\n");
    let out = c.rota().args(["worker", "revoke", &queued.to_string()]).output().unwrap();
    assert!(out.status.success());
    let addr = c.listen_addr();
    c.kill_server();
    c.start_server(&addr).await;
    let late = c.worker("late", 1).await;
    tokio::time::sleep(c.timing.ttl).await;
    let d = c.client.get_job(queued).await.unwrap();
    assert_eq!(d.summary.state, "revoked");
    assert!(d.step_details[0].attempts.is_empty(), "a revoked job never starts");
    let out =
        c.rota().args(["--json", "worker", "inspect", "--revoked", "--worker", "late"]).output().unwrap();
    let v = json(&out);
    let held: Vec<&str> =
        v["workers"][0]["revoked"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    assert!(held.contains(&queued.to_string().as_str()), "a worker started later holds the revoke: {v}");
    drop(late);
}

fn held_revokes(c: &Cluster, worker: &str) -> Vec<String> {
    let out =
        c.rota().args(["--json", "worker", "inspect", "--revoked", "--worker", worker]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    v["workers"][0]["revoked"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn revokes_expire_on_workers_unknown_ids_are_refused_and_keys_bind_later_jobs() {
    let c = Cluster::start(Timing::FAST).await;
    let _w = c.worker("w1", 1).await;

    // An expiring revoke: the worker holds it, then drops it when it expires.
    let id = c.submit_file("steps:\n  - name: s\n    run: sleep 300\n");
    c.wait_state(id, &["running"], c.timing.bound()).await;
    let expires = Duration::from_secs(2);
    // Taken before the command: the server starts the revoke's clock when it stores it,
    // which may be well before the command returns (on a loaded machine it was), so only
    // this instant is sure to precede the expiry by the full two seconds.
    let revoked_at = Instant::now();
    let out = c.rota().args(["worker", "revoke", "--expires", "2s", &id.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(held_revokes(&c, "w1").contains(&id.to_string()), "the worker holds the revoke");
    wait_for(expires + c.timing.bound(), "the worker to drop the expired revoke", || async {
        !held_revokes(&c, "w1").contains(&id.to_string())
    })
    .await;
    eprintln!("expired revoke (2 s) dropped by the worker after {:?}", revoked_at.elapsed());
    assert!(revoked_at.elapsed() >= expires, "not dropped before it expired");

    // An id the server never issued: refused, naming the id, nothing stored.
    let never = rota_domain::JobId::new();
    let out = c.rota().args(["worker", "revoke", &never.to_string()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a revoke of an unknown id must fail");
    assert!(err.contains(&never.to_string()) && err.contains("--key"), "{err}");
    let listed = c.client.list_revokes().await.unwrap();
    assert!(listed.revokes.iter().all(|r| r.job_id != never), "nothing stored for it");

    // A key: binds the job submitted later with it, which never runs.
    let m = c.marker_dir("keyed");
    let out = c.rota().args(["worker", "revoke", "--key", "nightly-42"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c
        .rota()
        .args(["job", "submit", "--json", "--idempotency-key", "nightly-42", "--", &format!("touch {m}/ran")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keyed: rota_domain::JobId = json(&out)["id"].as_str().unwrap().parse().unwrap();
    let d = c.wait_state(keyed, &["revoked"], c.timing.bound()).await;
    assert!(d.step_details[0].attempts.is_empty(), "a job submitted with a revoked key never starts");
    assert!(!std::path::Path::new(&format!("{m}/ran")).exists());
    let listed = c.client.list_revokes().await.unwrap();
    assert_eq!(listed.keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["nightly-42"]);
}

async fn long_step(c: &Cluster, dir: &str, on_lost: &str) -> (rota_domain::JobId, i32) {
    let m = c.path(dir);
    std::fs::create_dir_all(&m).unwrap();
    let m = m.display().to_string();
    let run = format!(
        "if [ -e {m}/ran ]; then echo again; else touch {m}/ran; echo $$ > {m}/leader; sleep 300; fi"
    );
    let id = c.submit_file(&format!(
        "steps:\n  - name: s\n    on_lost: {on_lost}\n    retry:\n      max_attempts: 3\n      backoff:\n        initial: 100ms\n    run: {}\n",
        rota_testkit::yaml_str(&run)
    ));
    let leader: i32 = wait_file(&c.path(&format!("{dir}/leader")), c.timing.bound()).await.parse().unwrap();
    (id, leader)
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_modes() {
    let c = Cluster::start(Timing::FAST).await;
    // Hard: the step is killed at once, the attempt is lost and runs again elsewhere.
    let mut w1 = c.worker("w1", 1).await;
    let (id, leader) = long_step(&c, "hard", "retry").await;
    let out = c
        .rota()
        .args(["worker", "shutdown", "--worker", "w1", "--mode", "hard", "--timeout", "10s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_gone(leader, &[leader], c.timing.bound()).await;
    assert_eq!(w1.wait_exit(c.timing.bound()), Some(0));
    let _w2 = c.worker("w2", 1).await;
    let d = c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    assert_eq!(format!("{:?}", d.step_details[0].attempts[0].status).to_lowercase(), "lost");

    // on_lost: fail → the job fails instead of running again.
    let mut w3 = c.worker("w3", 1).await;
    drop(_w2);
    let (id, leader) = long_step(&c, "fail", "fail").await;
    let who = c.client.get_job(id).await.unwrap().step_details[0].attempts[0].worker.clone();
    let out = c
        .rota()
        .args(["worker", "shutdown", "--worker", &who, "--mode", "hard", "--timeout", "10s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_gone(leader, &[leader], c.timing.bound()).await;
    let d = c.wait_state(id, &["failed"], c.timing.bound()).await;
    assert!(d.summary.reason.unwrap_or_default().contains("on_lost: fail"));
    let _ = w3.wait_exit(c.timing.bound());

    // Soft: TERM now; the step ends within the grace.
    let mut w4 = c.worker("w4", 1).await;
    let (_id, leader) = long_step(&c, "soft", "retry").await;
    let out = c
        .rota()
        .args(["worker", "shutdown", "--worker", "w4", "--mode", "soft", "--timeout", "10s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_gone(leader, &[leader], Duration::from_secs(5) + c.timing.bound()).await;
    assert_eq!(w4.wait_exit(c.timing.bound()), Some(0));

    // Warm: the running step finishes first.
    let mut w5 = c.worker("w5", 1).await;
    let m = c.path("warm");
    std::fs::create_dir_all(&m).unwrap();
    let run = format!("touch {}/started; sleep 2; echo done", m.display());
    let id = c.submit_step(&run);
    // w5 first re-runs the step the soft shutdown lost (instant), then this one.
    let start = Instant::now();
    while !c.path("warm/started").exists() {
        if start.elapsed() > c.timing.bound() * 2 {
            let d = c.client.get_job(id).await.unwrap();
            let workers = c.client.list_workers().await.unwrap();
            panic!(
                "warm step never started: {d:#?}\n{workers:#?}\nw5 log:\n{}\nserver:\n{}",
                w5.output(),
                c.server_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = c
        .rota()
        .args(["worker", "shutdown", "--worker", "w5", "--mode", "warm", "--timeout", "10s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nw5 log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w5.output()
    );
    assert_eq!(w5.wait_exit(c.timing.bound()), Some(0));
    let d = c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    assert_eq!(d.step_details[0].attempts.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscale_rises_to_max_and_falls_back_to_min() {
    let c = Cluster::start(Timing::FAST).await;
    let ws = c.path("ws-auto");
    let log = c.path("worker-auto.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut w = c
        .rota()
        .args(["worker", "run", "--server", &c.url, "--join-token", &c.join_token, "--name", "auto"])
        .args([
            "--queue",
            "scale",
            "--autoscale",
            "2,8",
            "--idle-period",
            "1s",
            "--cooldown",
            "200ms",
            "--workspace",
        ])
        .arg(&ws)
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    // A backlog of half-second jobs; even the small size keeps 8 slots busy for seconds.
    let total = rota_testkit::size::scenario_size("autoscale backlog (jobs of 0.5 s)", 120, 400);
    let jobs: Vec<rota_domain::JobSpec> = (0..total)
        .map(|_| {
            serde_json::from_str(r#"{"queue": "scale", "steps": [{"name": "s", "run": "sleep 0.5"}]}"#)
                .unwrap()
        })
        .collect();
    for chunk in jobs.chunks(200) {
        c.client.submit_batch(chunk).await.unwrap();
    }
    let stats = || {
        let out = c
            .rota()
            .args(["--json", "worker", "stats", "--worker", "auto", "--timeout", "5s"])
            .output()
            .unwrap();
        json(&out)
    };
    let mut peak = 0;
    let start = Instant::now();
    while peak < 8 && start.elapsed() < Duration::from_secs(60) {
        let v = stats();
        if let Some(a) = v["workers"][0]["activeConcurrency"].as_u64() {
            peak = peak.max(a);
            assert_eq!(v["workers"][0]["maxConcurrency"], 8);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(peak, 8, "active concurrency should reach MAX");
    // A stall of the claims (a loaded machine) can idle the worker, and scale it down,
    // before the backlog is done: the count of processed jobs decides.
    wait_for(Duration::from_secs(120), "the backlog to drain and concurrency to fall back to 2", || async {
        let v = stats();
        v["workers"][0]["activeConcurrency"].as_u64() == Some(2)
            && v["workers"][0]["inFlight"].as_u64() == Some(0)
            && v["workers"][0]["processed"].as_u64() == Some(total as u64)
    })
    .await;
    let v = stats();
    assert_eq!(v["workers"][0]["processed"], total);
    // The metric shows the concurrency in force (carried by heartbeats).
    wait_for(Duration::from_secs(10), "the metric to show concurrency 2", || async {
        c.client.metrics_text().await.unwrap_or_default().lines().any(|l| {
            l.starts_with("rota_worker_active_concurrency{")
                && l.contains("worker=\"auto\"")
                && l.ends_with(" 2")
        })
    })
    .await;
    let _ = w.kill();
    let _ = w.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_past_its_memory_limit_fails_with_reason_memory() {
    let c = Cluster::start(Timing::FAST).await;
    let _w = c.worker("w1", 1).await;
    // python3 holds ~200 MB for a while; the limit is 64 MiB.
    let run = "python3 -c 'import time; b = bytearray(200 * 1024 * 1024); time.sleep(30)'";
    let id = c.submit_file(&format!(
        "steps:\n  - name: s\n    memory_limit: 64MiB\n    run: {}\n",
        rota_testkit::yaml_str(run)
    ));
    let d = c.wait_state(id, &["failed"], c.timing.bound()).await;
    assert_eq!(d.step_details[0].reason.as_deref(), Some("memory"), "{:#?}", d.step_details);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_queue_holds_its_jobs_until_resumed() {
    let c = Cluster::start(Timing::FAST).await;
    let _w = c.worker("w1", 2).await;
    let out = c.rota().args(["worker", "pause", "--queue", "default"]).output().unwrap();
    assert!(out.status.success());
    let id = c.submit_file("steps:\n  - name: s\n    run: echo ran\n");
    tokio::time::sleep(c.timing.ttl).await;
    let d = c.client.get_job(id).await.unwrap();
    assert!(d.step_details[0].attempts.is_empty(), "nothing is claimed from a paused queue");
    let out = c.rota().args(["--json", "worker", "stats"]).output().unwrap();
    let v = json(&out);
    assert_eq!(v["queues"][0]["paused"], true);
    let out = c.rota().args(["worker", "resume", "--queue", "default"]).output().unwrap();
    assert!(out.status.success());
    c.wait_state(id, &["succeeded"], c.timing.bound()).await;
    let _ = pid_alive(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_jobs_recycles_the_background_worker_under_the_same_name() {
    let c = Cluster::start(Timing::FAST).await;
    let out = c
        .rota()
        .args(["worker", "start", "--name", "rec", "--queue", "rq", "--max-jobs", "5", "--concurrency", "2"])
        .args(["--join-token", &c.join_token, "--workspace"])
        .arg(c.path("ws-rec"))
        .output()
        .unwrap();
    assert!(out.status.success(), "start: {}", String::from_utf8_lossy(&out.stderr));
    let spec: rota_domain::JobSpec =
        serde_json::from_str(r#"{"queue": "rq", "steps": [{"name": "s", "run": "echo x"}]}"#).unwrap();
    let jobs: Vec<rota_domain::JobSpec> = (0..20).map(|_| spec.clone()).collect();
    let r = c.client.submit_batch(&jobs).await.unwrap();
    let ids: Vec<rota_domain::JobId> = r.results.iter().map(|i| i.result.as_ref().unwrap().id).collect();
    for id in &ids {
        let d = c.wait_state(*id, &["succeeded"], c.timing.bound() * 3).await;
        let attempts = &d.step_details[0].attempts;
        assert_eq!(attempts.len(), 1, "each job runs exactly once: {attempts:#?}");
        assert_eq!(attempts[0].worker, "rec", "the same name throughout");
    }
    let out = c.rota().args(["--json", "worker", "status"]).output().unwrap();
    let v = json(&out);
    assert_eq!(v["state"], "running", "the supervisor must not go failed: {v}");
    assert!(v["restarts"].as_u64().unwrap_or(0) >= 3, "at least three recyclings: {v}");
    let out = c.rota().args(["worker", "stop"]).output().unwrap();
    assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
}

/// Replaces values that change from run to run, keeping the shape.
fn redact(v: &mut serde_json::Value) {
    const VOLATILE: &[&str] = &[
        "rttMs",
        "uptimeS",
        "rssBytes",
        "runningMs",
        "pid",
        "jobId",
        "attemptId",
        "host",
        "sessionId",
        "id",
    ];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && !x.is_null() {
                    *x = serde_json::Value::String(format!("[{k}]"));
                } else {
                    redact(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_json_shapes() {
    let c = Cluster::start(Timing::FAST).await;
    let _w = c.worker("w1", 1).await;
    let m = c.path("shape");
    std::fs::create_dir_all(&m).unwrap();
    let run = format!("touch {}/started; sleep 300", m.display());
    let id = c.submit_step(&run);
    let start = Instant::now();
    while !c.path("shape/started").exists() {
        if start.elapsed() > c.timing.bound() {
            let d = c.client.get_job(id).await.unwrap();
            let workers = c.client.list_workers().await.unwrap();
            panic!(
                "step never started: {d:#?}\n{workers:#?}\nworker log:\n{}\nserver:\n{}",
                _w.output(),
                c.server_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = |args: &[&str]| {
        let mut full = vec!["--json", "worker"];
        full.extend_from_slice(args);
        let out = c.rota().args(&full).output().unwrap();
        let mut v = json(&out);
        redact(&mut v);
        v
    };
    insta::assert_json_snapshot!("fleet_ping", snap(&["ping", "--timeout", "10s"]));
    insta::assert_json_snapshot!("fleet_inspect", snap(&["inspect", "--revoked", "--timeout", "10s"]));
    insta::assert_json_snapshot!("fleet_stats", snap(&["stats", "--timeout", "10s"]));
    insta::assert_json_snapshot!("fleet_pause", snap(&["pause", "--queue", "default"]));
    insta::assert_json_snapshot!("fleet_revoke", snap(&["revoke", "--terminate", &id.to_string()]));
    insta::assert_json_snapshot!(
        "fleet_ping_unknown",
        snap(&["ping", "--worker", "ghost", "--timeout", "1s"])
    );
}
