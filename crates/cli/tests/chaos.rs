//! Issue 12, acceptance 6: chaos on two servers over PostgreSQL. Three workers, each given
//! both servers, run many small jobs (500; 5 000 under `ROTA_TEST_SIZE=full`, see
//! `scripts/full-size-tests`) while a random worker is SIGKILLed about every second and
//! restarted at once, alternately under its name (the same instance: its attempts are lost
//! at once, by supersession) and under a fresh name (a new instance: its attempts are lost
//! when their leases expire), and each server is killed -9 once (restarted at once on its
//! port). Every job ends terminal and
//! succeeded (none lost), each with exactly one successful attempt in the records; the
//! bodies are idempotent appends of their job id, and the test prints how many ran more
//! than once.
//!
//! Each step allows 10 attempts: a lost attempt is retried (the default `on_lost`), and a
//! job hit by three kills in a row (the default floor for lost attempts) would fail by
//! policy, not by a fault of the platform; this test is about the platform.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::Rng;
use rota_testkit::records::Records;
use rota_testkit::size::scenario_size;
use rota_testkit::{Backend, Env, HEARTBEAT, LEASE_TTL, Proc, server, spawn_worker};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const CONCURRENCY: &str = "4";
/// Jobs per batch submit.
const BATCH: usize = 250;

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "revoked"];

fn worker(env: &Env, name: &str) -> Proc {
    spawn_worker(env, name, &["--concurrency", CONCURRENCY]).kill_on_drop()
}

fn terminal(states: &BTreeMap<String, i64>) -> i64 {
    states.iter().filter(|(s, _)| TERMINAL.contains(&s.as_str())).map(|(_, n)| n).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_job_succeeds_once_while_workers_and_servers_are_killed() {
    if !Backend::Postgres.available() {
        return;
    }
    let jobs = scenario_size("chaos jobs", 500, 5_000);
    let began = Instant::now();
    let mut env = Env::on(Backend::Postgres);
    env.start_server(&[]);
    let a_listen = env.url.trim_start_matches("http://").to_string();
    let mut b = server::start(env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &[]))
        .unwrap_or_else(|e| panic!("{e}"));
    let b_listen = b.url.trim_start_matches("http://").to_string();
    let both = format!("{},{}", env.url, b.url);
    env.url = both.clone();
    let records = Records::connect(env.database_url().unwrap()).await;

    let ran = env.path("ran");
    let run = format!("sleep 0.3; echo \"$ROTA_JOB_ID\" >> {}", ran.display());
    let token = std::fs::read_to_string(env.data_dir().join("admin.token")).unwrap();
    let client = rota_client::Client::new(&both, Some(token.trim().to_string())).unwrap();
    let specs: Vec<rota_domain::JobSpec> = (0..jobs)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "name": format!("chaos-{i}"),
                "idempotency_key": format!("chaos-{i}"),
                "steps": [{"name": "s", "run": run, "retry": {"max_attempts": 10}}],
            }))
            .unwrap()
        })
        .collect();
    for chunk in specs.chunks(BATCH) {
        client.submit_batch(chunk).await.unwrap();
    }
    eprintln!("submitted {jobs} jobs in {:?}", began.elapsed());

    let mut workers: Vec<Proc> = (0..WORKERS).map(|i| worker(&env, &format!("chaos-{i}"))).collect();
    let chaos = Instant::now();
    let within = Duration::from_secs(if jobs > 1_000 { 3_600 } else { 600 });
    let mut rng = rand::rng();
    let (mut worker_kills, mut server_kills) = (0, 0);
    loop {
        let states = records.job_states().await;
        let done = terminal(&states);
        if done == jobs as i64 {
            break;
        }
        assert!(
            chaos.elapsed() < within,
            "not every job ended within {within:?}: {states:?}\nserver A:\n{}",
            env.server_log()
        );
        // Each server once: A past a third of the jobs, B past two thirds.
        if server_kills == 0 && done * 3 >= jobs as i64 {
            env.kill_server();
            env.start_server_on(&a_listen, HEARTBEAT, LEASE_TTL, &[]);
            env.url = both.clone();
            server_kills += 1;
            eprintln!("killed -9 and restarted server A at {done}/{jobs} ({:?})", chaos.elapsed());
        } else if server_kills == 1 && done * 3 >= 2 * jobs as i64 {
            b.proc.kill();
            b = server::start(env.server_spec(&b_listen, HEARTBEAT, LEASE_TTL, &[]))
                .unwrap_or_else(|e| panic!("{e}"));
            server_kills += 1;
            eprintln!("killed -9 and restarted server B at {done}/{jobs} ({:?})", chaos.elapsed());
        }
        let i = rng.random_range(0..WORKERS);
        workers[i].kill();
        let name =
            if worker_kills % 2 == 0 { format!("chaos-{i}") } else { format!("chaos-{i}-{worker_kills}") };
        workers[i] = worker(&env, &name);
        worker_kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..1_300))).await;
    }
    let took = chaos.elapsed();
    eprintln!(
        "every job ended {took:?} after the chaos began: {worker_kills} worker kills, {server_kills} server kills"
    );
    assert_eq!(server_kills, 2, "both servers were to be killed once before the end");

    // Lost 0: every job succeeded.
    let states = records.job_states().await;
    assert_eq!(states.get("succeeded").copied(), Some(jobs as i64), "{states:?}");
    // Recorded once: one successful attempt per job, and no attempt left running.
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    let (mut attempts, mut lost) = (0, 0);
    for a in records.attempts().await {
        attempts += 1;
        match a.status.as_str() {
            "succeeded" => *succeeded.entry(a.job).or_default() += 1,
            "lost" => lost += 1,
            "running" => panic!("an attempt is left running: {a:?}"),
            _ => {}
        }
    }
    assert_eq!(succeeded.len(), jobs, "every job has a successful attempt");
    let twice: Vec<_> = succeeded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "jobs recorded more than once: {twice:?}");

    // The bodies: every job's ran at least once; some more, as the kills allow.
    let text = std::fs::read_to_string(&ran).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *runs.entry(line.trim()).or_default() += 1;
    }
    assert_eq!(runs.len(), jobs, "every body appended its job id");
    let again = runs.values().filter(|n| **n > 1).count();
    eprintln!(
        "{again} of {jobs} bodies ran more than once; {attempts} attempts, {lost} lost and retried; total {:?}",
        began.elapsed()
    );
    drop(workers);
    drop(b);
}
