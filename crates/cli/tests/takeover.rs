//! Issue 12, acceptance 4: kill -9 the leader while leases expire and retention prunes; the
//! other server takes over, and nothing is expired twice or never. Two servers on one
//! PostgreSQL database, real workers, records read through the CLI and, where the API
//! cannot tell (attempts left running, pruned rows), from the database itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::records::Records;
use rota_testkit::several::leads;
use rota_testkit::{
    Backend, Env, HEARTBEAT, LEASE_TTL, bound, rota, server, show_json, spawn_worker, submit, wait_for_end,
    wait_for_state,
};
use std::time::{Duration, Instant};

/// Steps whose leases expire at the takeover.
const ORPHANS: usize = 4;
/// Finished jobs past retention when the leader dies, and recent ones that must stay.
const OLD: usize = 5;
const RECENT: usize = 3;

/// `(worker, status)` of each attempt of the job's only step, through the CLI.
fn attempts(env: &Env, job: &str) -> Vec<(String, String)> {
    show_json(env, job)["stepDetails"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| (a["worker"].as_str().unwrap().to_string(), a["status"].as_str().unwrap().to_string()))
        .collect()
}

/// The ids `rota job list --json` shows.
fn listed(env: &Env) -> Vec<String> {
    let out = rota(env).args(["job", "list", "--json", "--limit", "1000"]).output().unwrap();
    assert!(out.status.success(), "job list: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_other_server_takes_over_expiry_and_retention_when_the_leader_is_killed() {
    if !Backend::Postgres.available() {
        return;
    }
    let began = Instant::now();
    // A retention of an hour prunes every 6 minutes: once A has made its first pass, the jobs
    // this test ages past the retention wait for the next leader's first pass, which is the
    // handover under test (a retention of seconds would let A prune them in the window
    // before the kill, or not, by chance).
    let retention = ["--retention", "1h"];
    let mut env = Env::on(Backend::Postgres);
    env.start_server(&retention);
    let a = env.url.clone();
    let b = server::start(env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &retention))
        .unwrap_or_else(|e| panic!("{e}"));
    let records = Records::connect(env.database_url().unwrap()).await;
    let root = env.dir.path().to_path_buf();
    let t = Instant::now();
    while leads(&root, &a).await != Some(true) {
        assert!(t.elapsed() < bound(), "A never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leads(&root, &b.url).await, Some(false), "only one server leads");
    // Every command of this tree, the workers included, is given both servers.
    env.url = format!("{a},{}", b.url);

    // The worker that will be killed runs everything first: jobs that finish now, to be
    // aged or kept, then steps that run until it dies (a retry finishes at once).
    let mut doomed = spawn_worker(&env, "doomed", &["--concurrency", &ORPHANS.to_string()]);
    let quick: Vec<String> = (0..OLD + RECENT).map(|_| submit(&env, &["--", "true"])).collect();
    for id in &quick {
        assert_eq!(wait_for_end(&env, id)["state"], "succeeded");
    }
    let (old, recent) = quick.split_at(OLD);
    let marks = env.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let run = format!(
        "echo \"$ROTA_ATTEMPT\" >> {m}/$ROTA_JOB_ID; [ \"$ROTA_ATTEMPT\" = 1 ] && exec sleep 300; echo done",
        m = marks.display()
    );
    let orphans: Vec<String> = (0..ORPHANS).map(|_| submit(&env, &["--step", &format!("s={run}")])).collect();
    for id in &orphans {
        wait_for_state(&env, id, &["running"], bound());
        rota_testkit::wait_file(&marks.join(id), bound());
    }
    let survivor = spawn_worker(&env, "survivor", &["--concurrency", &ORPHANS.to_string()]);

    // Past retention, and waiting: A made its first pass when it began to lead.
    records.backdate_finished(old, Duration::from_secs(2 * 3600)).await;
    // The worker dies first (its leases now run out within a TTL), then the leader.
    doomed.kill();
    env.kill_server();
    let killed = Instant::now();
    eprintln!("killed the worker holding {ORPHANS} attempts, then the leader A ({a})");

    while leads(&root, &b.url).await != Some(true) {
        assert!(killed.elapsed() < Duration::from_secs(30), "B did not take over within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("B leads {:?} after A was killed", killed.elapsed());

    for id in &orphans {
        let end = wait_for_end(&env, id);
        assert_eq!(end["state"], "succeeded", "{end:#}");
        assert_eq!(
            attempts(&env, id),
            [("doomed".to_string(), "lost".to_string()), ("survivor".to_string(), "succeeded".to_string())],
            "job {id}: lost once, retried once"
        );
        let ran = std::fs::read_to_string(marks.join(id)).unwrap();
        assert_eq!(ran, "1\n2\n", "job {id}: the body ran once per attempt");
    }
    eprintln!("every orphaned step succeeded on the survivor {:?} after the kill", killed.elapsed());

    // The records: one lost attempt per killed one, none left running, none lost twice.
    let stored = records.attempts().await;
    assert!(stored.iter().all(|a| a.status != "running"), "attempts left running: {stored:#?}");
    for id in &orphans {
        let lost = stored.iter().filter(|a| &a.job == id && a.status == "lost").count();
        assert_eq!(lost, 1, "job {id}: {stored:#?}");
    }
    let expired = b.proc.output().matches("attempt lost: lease expired").count();
    assert_eq!(expired, ORPHANS, "B expired each lease once:\n{}", b.proc.output());

    // Retention: B prunes the aged jobs on its first pass as leader and keeps the rest.
    let t = Instant::now();
    loop {
        let ids = listed(&env);
        if old.iter().all(|id| !ids.contains(id)) {
            for id in recent.iter().chain(&orphans) {
                assert!(ids.contains(id), "job {id} was pruned too early: {ids:?}");
            }
            break;
        }
        assert!(t.elapsed() < bound(), "the aged jobs were never pruned: {ids:?}\n{}", b.proc.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("B pruned the {OLD} aged jobs {:?} after the kill", killed.elapsed());
    for id in old {
        assert!(!records.job_exists(id).await, "job {id} is still stored");
    }
    assert_eq!(records.job_count().await, (RECENT + ORPHANS) as i64);
    drop(survivor);
    eprintln!("took {:?}", began.elapsed());
}
