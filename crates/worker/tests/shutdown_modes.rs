//! Shutdown modes against the real server: warm lets a step finish, soft TERMs running
//! steps now (KILL after the grace), hard KILLs them at once, and a warm drain escalates
//! to hard mid-way. Stopped attempts are reported lost ("worker shut down") and the
//! worker unregisters.

#![allow(clippy::unwrap_used, missing_docs)]

use rota_client::Client;
use rota_domain::{AttemptStatus, JobId, JobSpec, OnLost, StepSpec, Target};
use rota_server::ServerConfig;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use rota_worker::{ShutdownHandle, ShutdownMode, WorkerConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token";
const JOIN: &str = "join-token";
/// The worker's TERM → KILL grace.
const KILL_GRACE: Duration = Duration::from_millis(800);
/// Slack on top of the grace for what takes milliseconds on an idle machine (an exit, a
/// flush, unregistering): generous, as CI is a loaded 2-core machine. Every bound stays
/// below the 30 s after which a worker that ignored the request is given up on.
const SLACK: Duration = Duration::from_secs(15);

async fn start_server(db: &Path) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store: Arc<dyn rota_store::JobStore> =
        Arc::new(SqliteStore::open(db, SqliteOptions::default()).unwrap());
    let config = ServerConfig {
        admin_token: ADMIN.into(),
        join_token: JOIN.into(),
        heartbeat_interval: Duration::from_millis(300),
        lease_ttl: Duration::from_secs(5),
        max_poll: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { rota_server::run(listener, store, config, stop).await.unwrap() }
    });
    (addr.to_string(), stop)
}

fn job(run: String) -> JobSpec {
    let mut step = StepSpec::new("s", run);
    step.on_lost = OnLost::Fail;
    JobSpec {
        name: None,
        queue: "default".into(),
        priority: 0,
        target: Target::default(),
        env: BTreeMap::new(),
        idempotency_key: None,
        deadline: None,
        steps: vec![step],
    }
}

async fn read_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "step never wrote {}", file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { return false };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        let Some(close) = stat.rfind(')') else { return false };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f[0] != "Z" && f[0] != "X"
    })
}

async fn wait_lost(c: &Client, id: JobId) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = c.get_job(id).await.unwrap();
        if let Some(a) = d.step_details[0].attempts.first()
            && a.status == AttemptStatus::Lost
        {
            return a.reason.clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "attempt never reported lost: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of this binary when it runs as a worker's step spawner.
#[test]
fn spawner_helper() {
    rota_worker::spawner::serve_if_test_helper();
}

/// Runs one worker with a TERM-ignoring step, requests `modes` in order (`gap` apart)
/// and returns (time from the first request to the worker's return, lost reason).
async fn stop_with(modes: &[ShutdownMode], gap: Duration) -> (Duration, String) {
    let t = tempfile::tempdir().unwrap();
    let (addr, stop_server) = start_server(&t.path().join("rota.db")).await;
    let c = Client::new(&addr, Some(ADMIN.into())).unwrap();
    let mut config = WorkerConfig::new(addr.clone(), JOIN, t.path().join("ws"));
    config.spawner = Some(rota_worker::spawner::start_in_test_binary("spawner_helper").unwrap());
    config.drain_timeout = Duration::from_secs(3600);
    config.kill_grace = KILL_GRACE;
    let handle = ShutdownHandle::new();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(rota_worker::run_with(config, handle.clone(), Some(tx)));
    tokio::time::timeout(Duration::from_secs(30), rx).await.unwrap().unwrap();
    let pidfile = t.path().join("pid");
    let job = c
        // The pid is written once TERM is ignored: a TERM that came before the trap would
        // end the step at once, without the grace.
        .submit(&job(format!("trap '' TERM; echo $$ > {}; sleep 300", pidfile.display())), None)
        .await
        .unwrap();
    let pgid = read_pid(&pidfile).await;
    let began = Instant::now();
    for (i, mode) in modes.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        handle.request(*mode);
    }
    tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap().unwrap();
    let took = began.elapsed();
    // The worker waits only briefly for a killed group to be gone: it may still be exiting.
    let deadline = Instant::now() + SLACK;
    while group_alive(pgid) {
        assert!(Instant::now() < deadline, "the step's group survived the shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = wait_lost(&c, job.id).await;
    let workers = c.list_workers().await.unwrap();
    assert!(
        workers.workers.iter().all(|w| w.state == rota_api_types::workers::WorkerState::Offline),
        "the worker did not unregister: {workers:?}"
    );
    stop_server.cancel();
    (took, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_kills_running_steps_at_once() {
    let (took, reason) = stop_with(&[ShutdownMode::Hard], Duration::ZERO).await;
    // No grace: KILL, flush and unregister, on a loaded machine.
    assert!(took < SLACK, "hard shutdown took {took:?}");
    assert!(reason.contains("worker shut down"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soft_terms_running_steps_and_kills_them_after_the_grace() {
    let (took, reason) = stop_with(&[ShutdownMode::Soft], Duration::ZERO).await;
    assert!(took >= KILL_GRACE, "the grace was not honoured: {took:?}");
    assert!(took < KILL_GRACE + SLACK, "soft shutdown took {took:?}");
    assert!(reason.contains("worker shut down"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_drain_escalates_to_hard() {
    let (took, reason) =
        stop_with(&[ShutdownMode::Warm, ShutdownMode::Hard], Duration::from_millis(500)).await;
    assert!(took < Duration::from_millis(500) + SLACK, "escalated shutdown took {took:?}");
    assert!(reason.contains("worker shut down"), "{reason}");
}
