//! The worker against the real server (axum + SQLite in a temp dir) over real HTTP, with
//! real processes: happy path with byte-exact output, failure, timeout, cancel, drain,
//! drain timeout, results delivered across a server restart, self-fencing when the server
//! is gone, and a superseded session.

#![allow(clippy::unwrap_used, missing_docs)]

use rota_api_types::jobs::{JobDetail, LogsQuery};
use rota_client::{Client, WorkerClient};
use rota_domain::{AttemptStatus, JobId, JobSpec, OnLost, StepSpec};
use rota_testkit::inproc::{self, JOIN, Server, read_pid, start_worker};
use rota_testkit::procs::{group_members, wait_gone};
use rota_worker::{ShutdownMode, WorkerConfig, WorkerError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The workers' TERM → KILL grace (`worker_config`).
const KILL_GRACE: Duration = Duration::from_millis(500);
/// Slack on top of a configured grace or TTL for what takes milliseconds on an idle
/// machine (an exit, a request, a log line): generous, as CI is a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(20);

/// The body of this binary when it runs as a worker's step spawner.
#[test]
fn spawner_helper() {
    rota_worker::spawner::serve_if_test_helper();
}

fn worker_config(server: &Server, ws: &Path) -> WorkerConfig {
    let mut c = inproc::worker_config(server, ws);
    c.concurrency = 4;
    c.kill_grace = KILL_GRACE;
    c
}

async fn wait_job(c: &Client, id: JobId, what: &str, ok: impl Fn(&JobDetail) -> bool) -> JobDetail {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = c.get_job(id).await.unwrap();
        if ok(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(c: &Client, id: JobId, state: &str) -> JobDetail {
    wait_job(c, id, state, |d| d.summary.state == state).await
}

async fn output(c: &Client, id: JobId, step: &str) -> (Vec<u8>, Vec<u8>) {
    let q = LogsQuery { step: Some(step.into()), ..LogsQuery::default() };
    let page = c.job_logs(id, &q).await.unwrap();
    let mut out = (Vec::new(), Vec::new());
    for ch in page.chunks {
        match ch.stream {
            rota_domain::Stream::Stdout => out.0.extend(ch.data.0),
            rota_domain::Stream::Stderr => out.1.extend(ch.data.0),
        }
    }
    out
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("rota.db");
    let ws = t.path().join("ws");
    (t, db, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_jobs_with_exact_output_failures_and_timeouts() {
    let (_t, db, ws) = dirs();
    let server = Server::start(&db, None, (500, 5000)).await;
    let c = server.client();
    let w = start_worker(worker_config(&server, &ws)).await;
    assert_eq!(w.ready.name, "w-ws");

    let mut b = StepSpec::new("b", r#"test -z "$ROTA_JOIN_TOKEN" && printf '%s' "$ROTA_STEP" >&2"#);
    b.needs = vec!["a".into()];
    let ok = c
        .submit(&JobSpec::new(vec![StepSpec::new("a", r"printf 'bin\377\376\000ary'"), b]), None)
        .await
        .unwrap();
    let fail = c.submit(&JobSpec::new(vec![StepSpec::new("x", "echo doomed; exit 3")]), None).await.unwrap();
    let mut slow = StepSpec::new("slow", "sleep 30 & sleep 30");
    slow.timeout = Some(Duration::from_millis(300));
    let timeout = c.submit(&JobSpec::new(vec![slow]), None).await.unwrap();

    wait_state(&c, ok.id, "succeeded").await;
    assert_eq!(output(&c, ok.id, "a").await, (b"bin\xff\xfe\x00ary".to_vec(), Vec::new()));
    assert_eq!(output(&c, ok.id, "b").await, (Vec::new(), b"b".to_vec()));
    let d = wait_state(&c, fail.id, "failed").await;
    assert_eq!(d.step_details[0].attempts[0].exit_code, Some(3));
    assert_eq!(output(&c, fail.id, "x").await.0, b"doomed\n");
    let d = wait_state(&c, timeout.id, "failed").await;
    assert_eq!(d.step_details[0].attempts[0].status, AttemptStatus::Timeout);

    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    let workers = c.list_workers().await.unwrap();
    assert_eq!(workers.workers[0].state, rota_api_types::workers::WorkerState::Offline, "{workers:?}");
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_kills_the_step_group() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (500, 5000)).await;
    let c = server.client();
    let w = start_worker(worker_config(&server, &ws)).await;
    let pidfile = t.path().join("pid");
    let run = format!("echo $$ > {}; sleep 300 & sleep 300", pidfile.display());
    let j = c.submit(&JobSpec::new(vec![StepSpec::new("s", run)]), None).await.unwrap();
    let pgid = read_pid(&pidfile).await;
    assert!(!group_members(pgid).is_empty());
    c.cancel_job(j.id).await.unwrap();
    wait_state(&c, j.id, "cancelled").await;
    wait_gone(pgid, &[], KILL_GRACE + SLACK).await;
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_lets_steps_finish_and_the_timeout_stops_the_rest() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (500, 5000)).await;
    let c = server.client();
    let mut config = worker_config(&server, &ws);
    config.drain_timeout = Duration::from_secs(2);
    let w = start_worker(config).await;
    let (p1, p2) = (t.path().join("p1"), t.path().join("p2"));
    let q = StepSpec::new("q", format!("echo $$ > {}; sleep 1; echo ok", p1.display()));
    let quick = c.submit(&JobSpec::new(vec![q]), None).await.unwrap();
    // The pid is written once TERM is ignored, so the stop below always needs the KILL.
    let mut stuck = StepSpec::new("s", format!("trap '' TERM; echo $$ > {}; sleep 300", p2.display()));
    stuck.on_lost = OnLost::Fail;
    let stuck = c.submit(&JobSpec::new(vec![stuck]), None).await.unwrap();
    read_pid(&p1).await;
    let pgid = read_pid(&p2).await;

    let began = Instant::now();
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    // Drain timeout, then TERM → grace → KILL; without them the drain would wait 300 s.
    let bound = Duration::from_secs(2) + KILL_GRACE + SLACK;
    assert!(began.elapsed() < bound, "drain took {:?}", began.elapsed());
    // The worker waits only briefly for the killed group to be gone: it may still be exiting.
    wait_gone(pgid, &[], SLACK).await;
    wait_state(&c, quick.id, "succeeded").await;
    assert_eq!(output(&c, quick.id, "q").await.0, b"ok\n");
    let d = wait_state(&c, stuck.id, "failed").await;
    let a = &d.step_details[0].attempts[0];
    assert_eq!(a.status, AttemptStatus::Lost);
    assert!(a.reason.as_deref().unwrap_or_default().contains("worker shut down"), "{a:?}");
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_are_delivered_after_a_server_restart() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (300, 5000)).await;
    let addr = server.addr;
    let w = start_worker(worker_config(&server, &ws)).await;
    let pidfile = t.path().join("pid");
    let run = format!("echo $$ > {}; sleep 1.5; printf 'after restart'", pidfile.display());
    let j = server.client().submit(&JobSpec::new(vec![StepSpec::new("s", run)]), None).await.unwrap();
    let pgid = read_pid(&pidfile).await;
    server.shut().await;
    // The step ends while the server is away (waited for, not slept for); the worker keeps
    // the result.
    wait_gone(pgid, &[], SLACK).await;
    let server = Server::start(&db, Some(addr), (300, 5000)).await;
    let c = server.client();
    wait_state(&c, j.id, "succeeded").await;
    assert_eq!(output(&c, j.id, "s").await.0, b"after restart");
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_the_server_fences_its_steps() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (300, 2000)).await;
    let w = start_worker(worker_config(&server, &ws)).await;
    let pidfile = t.path().join("pid");
    let run = format!("echo $$ > {}; sleep 300 & sleep 300", pidfile.display());
    server.client().submit(&JobSpec::new(vec![StepSpec::new("s", run)]), None).await.unwrap();
    let pgid = read_pid(&pidfile).await;
    let cut = Instant::now();
    server.stop.cancel();
    // Lease 2 s, margin min(300 ms, 500 ms): fenced about 1.7 s after the last renewal.
    // Without fencing the step would run 300 s; the bound only has to tell them apart.
    let ttl = Duration::from_secs(2);
    wait_gone(pgid, &[], ttl + SLACK).await;
    assert!(cut.elapsed() < ttl + SLACK);
    // Aborting the worker is a hard stop; nothing may be left running.
    w.task.abort();
    let _ = w.task.await;
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_superseded_session_kills_its_steps_and_registers_again() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (300, 5000)).await;
    let c = server.client();
    let config = worker_config(&server, &ws);
    let name = config.name.clone();
    let w = start_worker(config).await;
    let pidfile = t.path().join("pid");
    let run = format!("echo $$ >> {}; sleep 300", pidfile.display());
    let j = c.submit(&JobSpec::new(vec![StepSpec::new("s", run)]), None).await.unwrap();
    let first = read_pid(&pidfile).await;

    // Someone registers the same name: the worker's session is superseded.
    let imposter = WorkerClient::new(&server.addr.to_string()).unwrap();
    let req = rota_api_types::worker::RegisterRequest {
        namespace: "default".into(),
        protocol_version: rota_domain::PROTOCOL_VERSION,
        protocol_minor: rota_domain::PROTOCOL_MINOR,
        name,
        host: "elsewhere".into(),
        profile: None,
        version: "test".into(),
        queues: vec!["nothing-here".into()],
        tags: vec![],
        concurrency: 1,
        capabilities: vec![],
        pid: None,
        instance_id: None,
        replace: false,
    };
    imposter.register(JOIN, &req).await.unwrap();
    wait_gone(first, &[], SLACK).await;
    // The lost attempt is retried on the worker's new session.
    let d = wait_job(&c, j.id, "a second attempt", |d| d.step_details[0].attempts.len() >= 2).await;
    assert_eq!(d.step_details[0].attempts[0].status, AttemptStatus::Lost);
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let pid = read_pid(&pidfile).await;
        if pid != first {
            break pid;
        }
        assert!(Instant::now() < deadline, "the retry never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.cancel_job(j.id).await.unwrap();
    wait_state(&c, j.id, "cancelled").await;
    wait_gone(second, &[], KILL_GRACE + SLACK).await;
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_join_token_is_refused_at_once() {
    let (_t, db, ws) = dirs();
    let server = Server::start(&db, None, (500, 5000)).await;
    let mut config = worker_config(&server, &ws);
    config.join_token = "wrong".into();
    let res = tokio::time::timeout(SLACK, rota_worker::run(config, CancellationToken::new(), None));
    match res.await.unwrap() {
        Err(WorkerError::Refused { message }) => assert!(message.contains("join token"), "{message}"),
        other => panic!("{other:?}"),
    }
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_over_its_memory_limit_is_killed() {
    let (t, db, ws) = dirs();
    let server = Server::start(&db, None, (500, 5000)).await;
    let c = server.client();
    let w = start_worker(worker_config(&server, &ws)).await;
    let pidfile = t.path().join("pid");
    // `tail` keeps its whole (newline-free) input: about 60 MB for 30 s.
    let run =
        format!("echo $$ > {}; (head -c 60000000 /dev/zero; sleep 30) | tail >/dev/null", pidfile.display());
    let mut step = StepSpec::new("hog", run);
    step.memory_limit = Some(20 << 20);
    let j = c.submit(&JobSpec::new(vec![step]), None).await.unwrap();
    let pgid = read_pid(&pidfile).await;
    let d = wait_state(&c, j.id, "failed").await;
    assert_eq!(d.step_details[0].attempts[0].status, AttemptStatus::Memory);
    wait_gone(pgid, &[], SLACK).await;
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}
