//! A completion that claims for the slot it frees (protocol minor 2), against the real
//! server over real HTTP with real processes: the next step starts in the freed slot
//! without a claim request, the concurrency is never exceeded, a draining worker's
//! completion claims nothing, and a server that does not know the feature (an older minor)
//! still gets its steps claimed the old way.

#![allow(clippy::unwrap_used, missing_docs)]

use rota_client::Client;
use rota_domain::{JobId, JobSpec, StepSpec};
use rota_testkit::inproc::{self, Server, start_worker};
use rota_worker::{ShutdownMode, WorkerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of this binary when it runs as a worker's step spawner.
#[test]
fn spawner_helper() {
    rota_worker::spawner::serve_if_test_helper();
}

fn worker_config(addr: String, server: &Server, ws: &Path, concurrency: u32) -> WorkerConfig {
    let mut c = inproc::worker_config(server, ws);
    c.server = addr;
    c.concurrency = concurrency;
    c.kill_grace = Duration::from_millis(500);
    c
}

async fn metric(c: &Client, name: &str) -> u64 {
    let text = c.metrics_text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn submit_all(c: &Client, runs: &[String]) -> Vec<JobId> {
    let mut ids = Vec::new();
    for run in runs {
        ids.push(c.submit(&JobSpec::new(vec![StepSpec::new("s", run.clone())]), None).await.unwrap().id);
    }
    ids
}

async fn wait_all(c: &Client, ids: &[JobId], state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let d = c.get_job(*id).await.unwrap();
            if d.summary.state == state {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never {state}: {d:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The most steps that ran at once, from the `+`/`-` lines the steps appended to `file`
/// (a step appends `+` once it runs and `-` just before it exits, so this never counts
/// more than really ran at once).
fn most_at_once(file: &Path) -> i32 {
    let text = std::fs::read_to_string(file).unwrap();
    let (mut now, mut most) = (0, 0);
    for l in text.lines() {
        now += if l == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_completion_starts_the_next_step_in_the_freed_slot_within_the_concurrency() {
    let t = tempfile::tempdir().unwrap();
    let server = Server::start(&t.path().join("rota.db"), None, (500, 5000)).await;
    let c = server.client();
    let trace = t.path().join("trace");
    // Steps of mixed lengths, so slots free at different moments.
    let runs: Vec<String> = (0..40)
        .map(|i| {
            let nap = if i % 3 == 0 { "sleep 0.05;" } else { "" };
            format!("echo + >> {0}; {nap} echo - >> {0}", trace.display())
        })
        .collect();
    let ids = submit_all(&c, &runs).await;
    let w = start_worker(worker_config(server.addr.to_string(), &server, &t.path().join("ws"), 2)).await;
    wait_all(&c, &ids, "succeeded").await;
    let claimed = metric(&c, "rota_attempts_claimed_total").await;
    let with_results = metric(&c, "rota_attempts_claimed_at_completion_total").await;
    assert_eq!(claimed, 40);
    // The claim loop fills the two slots once; after that a freed slot is filled by the
    // completion that frees it (a few may go the old way when two results share a request
    // with one slot left, or a step ends while the first claim is still on its way).
    assert!(with_results >= 30, "{with_results} of 40 claimed with a completion");
    let most = most_at_once(&trace);
    assert!(most <= 2, "{most} steps ran at once on a worker of concurrency 2");
    // The last result frees its slot: the worker is idle and claims new work as before.
    let late = submit_all(&c, &[format!("echo + >> {0}; echo - >> {0}", trace.display())]).await;
    wait_all(&c, &late, "succeeded").await;
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_workers_completion_claims_nothing() {
    let t = tempfile::tempdir().unwrap();
    let server = Server::start(&t.path().join("rota.db"), None, (500, 5000)).await;
    let c = server.client();
    let started = t.path().join("started");
    let first = submit_all(&c, &[format!("touch {}; sleep 1", started.display())]).await;
    let w = start_worker(worker_config(server.addr.to_string(), &server, &t.path().join("ws"), 1)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the first step never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rest = submit_all(&c, &["true".to_string(), "true".to_string()]).await;
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    wait_all(&c, &first, "succeeded").await;
    for id in &rest {
        // No worker is left, so the job may show as unschedulable: it has no attempt.
        let d = c.get_job(*id).await.unwrap();
        assert!(d.step_details[0].attempts.is_empty(), "a draining worker took {id}: {d:#?}");
    }
    assert_eq!(metric(&c, "rota_attempts_claimed_at_completion_total").await, 0);
    server.shut().await;
}

/// Forwards connections to `to`, rewriting the server's protocol minor in what it answers
/// to 1 (same length): the worker then talks to what looks like a server without the
/// feature.
async fn older_minor_proxy(to: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut buf = vec![0u8; 64 * 1024];
                let needle = format!("\"protocolMinor\":{}", rota_domain::PROTOCOL_MINOR).into_bytes();
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let chunk = &mut buf[..n];
                    if let Some(i) = chunk.windows(needle.len()).position(|w| w == needle.as_slice()) {
                        chunk[i + needle.len() - 1] = b'1';
                    }
                    if cw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn against_a_server_of_an_older_minor_steps_are_claimed_as_before() {
    const { assert!(rota_domain::PROTOCOL_MINOR < 10, "the proxy rewrites one digit") };
    let t = tempfile::tempdir().unwrap();
    let server = Server::start(&t.path().join("rota.db"), None, (500, 5000)).await;
    let c = server.client();
    let ids = submit_all(&c, &vec!["true".to_string(); 10]).await;
    let proxy = older_minor_proxy(server.addr).await;
    let w = start_worker(worker_config(proxy.to_string(), &server, &t.path().join("ws"), 2)).await;
    wait_all(&c, &ids, "succeeded").await;
    assert_eq!(metric(&c, "rota_attempts_claimed_total").await, 10);
    assert_eq!(metric(&c, "rota_attempts_claimed_at_completion_total").await, 0, "no claim was asked");
    w.shutdown.request(ShutdownMode::Warm);
    w.task.await.unwrap().unwrap();
    server.shut().await;
}
