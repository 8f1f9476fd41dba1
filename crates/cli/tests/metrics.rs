//! `/metrics` end to end (issue 16, acceptance 3), with a real `rota server` on both
//! backends: the text parses with a Prometheus text-format parser; `rota_attempts_lost_total`
//! moves for each way an attempt ends lost (its worker reports it lost, unregisters holding
//! it, registers again holding it, goes silent past its lease); a stopped worker's series
//! disappear; two servers of one PostgreSQL control plane do not both export the queue
//! gauges. The worker here is the test itself speaking the worker protocol, so each way is
//! taken exactly once. Polls with generous bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use prometheus_parse::{Sample, Scrape, Value};
use rota_api_types::worker::{ClaimRequest, CompleteRequest, RegisterRequest};
use rota_client::{Client, WorkerClient};
use rota_domain::{AttemptOutcome, JobSpec, PROTOCOL_MINOR, PROTOCOL_VERSION};
use rota_testkit::{Backend, Env, both_backends, bound, server};
use std::time::{Duration, Instant};

fn admin(env: &Env, url: &str) -> Client {
    Client::new(url, Some(server::read_token(&env.data_dir().join("admin.token")).unwrap())).unwrap()
}

async fn scrape(client: &Client) -> Scrape {
    let text = client.metrics_text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The sample of `name` whose labels include `labels`.
fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn lost(scrape: &Scrape, cause: &str) -> f64 {
    find(scrape, "rota_attempts_lost_total", &[("cause", cause)]).map_or(0.0, value)
}

fn registration(name: &str) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        protocol_minor: PROTOCOL_MINOR,
        name: name.into(),
        namespace: "default".into(),
        host: "test-host".into(),
        profile: None,
        version: "test".into(),
        queues: vec!["lost".into()],
        tags: Vec::new(),
        concurrency: 1,
        capabilities: Vec::new(),
        pid: None,
        instance_id: Some("instance-1".into()),
        replace: false,
    }
}

fn job() -> JobSpec {
    serde_json::from_str(r#"{"queue":"lost","steps":[{"name":"a","run":"true"}]}"#).unwrap()
}

/// Submits a job and claims its step as `w`.
async fn hold_one(client: &Client, w: &WorkerClient) -> rota_api_types::worker::ClaimedStep {
    client.submit(&job(), None).await.unwrap();
    let got = w.claim(&ClaimRequest { max: 1, wait_ms: 5_000 }).await.unwrap();
    got.attempts.into_iter().next().expect("the step was claimed")
}

/// Polls until `lost_total{cause}` reached `want`.
async fn lost_reaches(client: &Client, cause: &str, want: f64) {
    let started = Instant::now();
    loop {
        let got = lost(&scrape(client).await, cause);
        if got >= want {
            assert_eq!(got, want, "{cause}");
            return;
        }
        assert!(started.elapsed() < bound(), "rota_attempts_lost_total{{cause={cause}}} stayed {got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

both_backends!(async fn the_lost_counter_moves_for_each_way_and_a_stopped_workers_series_disappear);
async fn the_lost_counter_moves_for_each_way_and_a_stopped_workers_series_disappear(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let client = admin(&env, &env.url);
    let join = env.join_token();

    let first = scrape(&client).await;
    for name in ["rota_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total"] {
        assert!(first.samples.iter().any(|s| s.metric == name), "{name} missing");
    }
    for cause in ["reported", "unregistered", "superseded", "lease_expired"] {
        assert_eq!(lost(&first, cause), 0.0);
    }

    // Its worker reports it lost (self-fencing, a hard shutdown).
    let w = WorkerClient::new(&env.url).unwrap();
    w.register(&join, &registration("m1")).await.unwrap();
    let a = hold_one(&client, &w).await;
    let report = CompleteRequest {
        attempt_id: a.attempt_id,
        outcome: AttemptOutcome::Lost { why: "lease could not be renewed: fenced".into() },
        logs: Vec::new(),
        dropped_bytes: 0,
        run_ms: Some(1500),
        outputs: Default::default(),
    };
    w.complete(a.job_id, &a.step, &report).await.unwrap();
    lost_reaches(&client, "reported", 1.0).await;
    let s = scrape(&client).await;
    let by_worker = find(&s, "rota_worker_active_concurrency", &[("worker", "m1"), ("namespace", "default")]);
    assert_eq!(by_worker.map(value), Some(1.0));
    assert!(find(&s, "rota_attempts_completed_total", &[("outcome", "lost")]).is_some());
    let text = client.metrics_text().await.unwrap();
    assert!(text.contains("rota_step_duration_seconds_count{outcome=\"lost\"} 1"), "{text}");

    // Its worker unregisters holding it (a shutdown that did not finish it).
    hold_one(&client, &w).await;
    w.unregister().await.unwrap();
    lost_reaches(&client, "unregistered", 1.0).await;

    // Its worker registers again holding it (a restart of the same instance).
    let w = WorkerClient::new(&env.url).unwrap();
    w.register(&join, &registration("m1")).await.unwrap();
    hold_one(&client, &w).await;
    let w = WorkerClient::new(&env.url).unwrap();
    w.register(&join, &registration("m1")).await.unwrap();
    lost_reaches(&client, "superseded", 1.0).await;

    // Its worker goes silent: the lease expires.
    hold_one(&client, &w).await;
    lost_reaches(&client, "lease_expired", 1.0).await;
    let s = scrape(&client).await;
    for cause in ["reported", "unregistered", "superseded", "lease_expired"] {
        assert_eq!(lost(&s, cause), 1.0, "{cause} counted once");
    }

    // Nobody heartbeats for m1 any more: its series goes.
    let started = Instant::now();
    while find(&scrape(&client).await, "rota_worker_active_concurrency", &[("worker", "m1")]).is_some() {
        assert!(started.elapsed() < bound().max(Duration::from_secs(60)), "m1's series stayed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("m1's series went {:?} after its last word", started.elapsed());
}

both_backends!(async fn queue_gauges_are_exported_once_per_control_plane);
/// The leader exports the fleet gauges from its snapshot; on PostgreSQL a second server of
/// the same control plane exports none, so a sum over servers counts each step once.
async fn queue_gauges_are_exported_once_per_control_plane(backend: Backend) {
    let mut env = Env::on(backend);
    env.start_server(&[]);
    let a = admin(&env, &env.url);
    let spec: JobSpec =
        serde_json::from_str(r#"{"queue":"gauged","steps":[{"name":"a","run":"true"}]}"#).unwrap();
    for _ in 0..3 {
        a.submit(&spec, None).await.unwrap();
    }
    let b = (backend == Backend::Postgres).then(|| server::start_beside(&env, env.database_url().unwrap()));
    let mut clients = vec![a];
    if let Some(b) = &b {
        clients.push(admin(&env, &b.url));
    }
    let ready = [("namespace", "default"), ("queue", "gauged"), ("state", "ready")];
    let started = Instant::now();
    loop {
        let mut total = 0.0;
        let mut exporting = 0;
        let mut leaders = 0;
        for c in &clients {
            let s = scrape(c).await;
            if let Some(v) = find(&s, "rota_queue_steps", &ready) {
                total += value(v);
                exporting += 1;
            }
            leaders += s.samples.iter().filter(|s| s.metric == "rota_leader").count();
        }
        if exporting == 1 && total == 3.0 {
            assert_eq!(leaders, 1, "one leader exports rota_leader");
            break;
        }
        assert!(exporting <= 1, "{exporting} servers export the queue gauges");
        assert!(started.elapsed() < bound(), "the leader never exported 3 ready steps (total {total})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And the other keeps not exporting them while it serves.
    if let Some(b) = &b {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let s = scrape(&admin(&env, &b.url)).await;
        assert!(find(&s, "rota_queue_steps", &[]).is_none(), "the non-leader exports queue gauges");
    }
}
