//! Steps never outlive their worker, and a kill the worker decided on is recorded with its
//! own reason (issue 9, points 1 and 2), end to end: a real `rota server`, real `rota
//! worker` processes and their spawner helpers, real `sh` steps. Tests poll with generous
//! bounds and print the times they observed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_domain::JobId;
use rota_testkit::cluster::{Cluster, Timing, wait_file};
use std::time::{Duration, Instant};

fn status(a: &rota_api_types::jobs::AttemptView) -> String {
    format!("{:?}", a.status).to_lowercase()
}

/// Kill -9 the server for twice the lease TTL with 8 long steps running, then restart it:
/// every worker-fenced step ends `lost` with the fencing reason (never `failed: killed by
/// signal 9`), so `on_lost: retry` applies and the retry succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_outage_longer_than_the_lease_ends_steps_lost_and_retries_them() {
    let timing = Timing { heartbeat: Duration::from_millis(300), ttl: Duration::from_secs(2) };
    let mut c = Cluster::start(timing).await;
    let _w = c.worker("w1", 8).await;
    let m = c.marker_dir("outage");
    let mut jobs: Vec<JobId> = Vec::new();
    for i in 0..8 {
        // The first attempt blocks; its retry succeeds at once.
        let run = format!(
            "if [ \"$ROTA_ATTEMPT\" = 1 ]; then echo $$ > {m}/{i}; sleep 300 & wait; fi; echo attempt $ROTA_ATTEMPT"
        );
        jobs.push(c.submit_step(&run));
    }
    for i in 0..8 {
        wait_file(&c.path(&format!("outage/{i}")), timing.bound()).await;
    }
    let addr = c.listen_addr();
    c.kill_server();
    let down = Instant::now();
    tokio::time::sleep(timing.ttl * 2).await;
    c.start_server(&addr).await;
    eprintln!("server down for {:?}", down.elapsed());
    let start = Instant::now();
    for id in &jobs {
        let d = c.wait_state(*id, &["succeeded", "failed"], timing.bound() * 2).await;
        let attempts = &d.step_details[0].attempts;
        assert_eq!(d.summary.state, "succeeded", "job {id}: {attempts:#?}");
        assert!(attempts.len() >= 2, "job {id}: {attempts:#?}");
        let first = &attempts[0];
        assert_eq!(status(first), "lost", "job {id}: {attempts:#?}");
        let reason = first.reason.clone().unwrap_or_default();
        assert!(reason.contains("self-fenced"), "job {id}: the first attempt's reason is {reason:?}");
        assert_eq!(status(attempts.last().expect("attempt")), "succeeded");
    }
    eprintln!("all 8 retried to success {:?} after the restart", start.elapsed());
}

/// Revoke `--terminate`, a timeout and a memory limit each kill the step's group; each is
/// recorded with its own reason, never as the step's own signal death.
#[tokio::test(flavor = "multi_thread")]
async fn revoke_timeout_and_memory_kills_are_recorded_with_their_own_reasons() {
    let c = Cluster::start(Timing::FAST).await;
    let _w = c.worker("w1", 3).await;
    let m = c.marker_dir("kills");
    let block = |name: &str| format!("echo $$ > {m}/{name}; sleep 300 & wait");
    let revoked = c.submit_file(&format!(
        "steps:\n  - name: s\n    run: {}\n",
        rota_testkit::yaml_str(&block("revoke"))
    ));
    let timed_out = c.submit_file(&format!(
        "steps:\n  - name: s\n    timeout: 3s\n    run: {}\n",
        rota_testkit::yaml_str(&block("timeout"))
    ));
    // dd holds a 64 MiB buffer while it copies for minutes: over a 16 MiB limit.
    let hog = format!("echo $$ > {m}/memory; dd if=/dev/zero of=/dev/null bs=64M count=100000");
    let hogged = c.submit_file(&format!(
        "steps:\n  - name: s\n    memory_limit: 16MiB\n    run: {}\n",
        rota_testkit::yaml_str(&hog)
    ));
    for name in ["revoke", "timeout", "memory"] {
        wait_file(&c.path(&format!("kills/{name}")), c.timing.bound()).await;
    }
    let out = c.rota().args(["worker", "revoke", "--terminate", &revoked.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let d = c.wait_state(revoked, &["revoked"], c.timing.bound()).await;
    rota_testkit::wait_for(c.timing.bound(), "the revoked attempt to end", || async {
        c.client.get_job(revoked).await.is_ok_and(|d| d.step_details[0].attempts[0].finished_at.is_some())
    })
    .await;
    let a = &c.client.get_job(revoked).await.unwrap().step_details[0].attempts[0];
    assert_eq!(status(a), "cancelled", "{:#?}", d.step_details);

    let d = c.wait_state(timed_out, &["failed"], c.timing.bound()).await;
    let a = &d.step_details[0].attempts[0];
    assert_eq!((status(a).as_str(), a.reason.as_deref()), ("timeout", Some("timeout")), "{a:#?}");

    let d = c.wait_state(hogged, &["failed"], c.timing.bound()).await;
    let a = &d.step_details[0].attempts[0];
    assert_eq!(status(a), "memory", "{a:#?}");
    for id in [revoked, timed_out, hogged] {
        let d = c.client.get_job(id).await.unwrap();
        for a in &d.step_details[0].attempts {
            let reason = a.reason.clone().unwrap_or_default();
            assert!(!reason.contains("signal"), "job {id}: recorded as a signal death: {a:#?}");
        }
    }
}

/// Kill -9 a foreground worker whose step started `sleep 300 &`: its spawner kills the
/// step's group, so no process of the step remains.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_foreground_worker_leaves_no_step_process() {
    let c = Cluster::start(Timing::FAST).await;
    let mut w = c.worker("w1", 1).await;
    let m = c.marker_dir("orphans");
    let run = format!("sleep 300 & echo $! > {m}/bg; (sleep 300 & wait) & wait");
    let id = c.submit_step(&run);
    wait_file(&c.path("orphans/bg"), c.timing.bound()).await;
    rota_testkit::wait_for(c.timing.bound(), "the step's processes", || async {
        rota_testkit::procs::job_processes(id).len() >= 3
    })
    .await;
    w.signal("KILL");
    w.wait_exit(Duration::from_secs(10));
    let took = rota_testkit::procs::wait_job_processes_gone(id, Duration::from_secs(10));
    eprintln!("worker SIGKILLed: every process of the step gone after {took:?}");
}

/// A kill -9 of the worker right after a spawn was answered (a test-only hook of the
/// feature `test-hooks`) leaves no process of the step either; its group had been journaled first.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_right_after_a_spawn_leaves_no_step_process() {
    if !rota_testkit::require::require_test_hooks() {
        return;
    }
    let c = Cluster::start(Timing::FAST).await;
    let ws = c.path("ws-hook");
    let mut w = c.worker_with("w1", 1, &ws, &[("ROTA_TEST_KILL_AFTER_SPAWN", "1")]).await;
    let id = c.submit_file("steps:\n  - name: s\n    run: sleep 300 & sleep 300 & wait\n");
    let code = w.wait_exit(c.timing.bound());
    assert_eq!(code, None, "the hook KILLs the worker; log:\n{}", w.output());
    let journal = std::fs::read_to_string(ws.join(".rota/running.log")).unwrap_or_default();
    assert!(journal.starts_with("+{"), "the spawner journals the group before answering: {journal:?}");
    let took = rota_testkit::procs::wait_job_processes_gone(id, Duration::from_secs(10));
    eprintln!("worker SIGKILLed right after the spawn: every process of the step gone after {took:?}");
}
