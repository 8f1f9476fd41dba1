//! Shutdown modes against the real server: warm lets a step finish, soft TERMs running
//! steps now (KILL after the grace), hard KILLs them at once, and a warm drain escalates
//! to hard mid-way. Stopped attempts are reported lost ("worker shut down") and the
//! worker unregisters.

#![allow(clippy::unwrap_used, missing_docs)]

use rota_client::Client;
use rota_domain::{AttemptStatus, JobId, JobSpec, OnLost, StepSpec};
use rota_testkit::inproc::{self, Server, read_pid, start_worker};
use rota_testkit::procs::group_members;
use rota_worker::ShutdownMode;
use std::time::{Duration, Instant};

/// The worker's TERM → KILL grace.
const KILL_GRACE: Duration = Duration::from_millis(800);
/// Slack on top of the grace for what takes milliseconds on an idle machine (an exit, a
/// flush, unregistering): generous, as CI is a loaded 2-core machine. Every bound stays
/// below the 30 s after which a worker that ignored the request is given up on.
const SLACK: Duration = Duration::from_secs(15);

fn job(run: String) -> JobSpec {
    let mut step = StepSpec::new("s", run);
    step.on_lost = OnLost::Fail;
    JobSpec::new(vec![step])
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
    let server = Server::start(&t.path().join("rota.db"), None, (300, 5000)).await;
    let c = server.client();
    let mut config = inproc::worker_config(&server, &t.path().join("ws"));
    config.drain_timeout = Duration::from_secs(3600);
    config.kill_grace = KILL_GRACE;
    let w = start_worker(config).await;
    let (handle, task) = (w.shutdown, w.task);
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
    while !group_members(pgid).is_empty() {
        assert!(Instant::now() < deadline, "the step's group survived the shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = wait_lost(&c, job.id).await;
    let workers = c.list_workers().await.unwrap();
    assert!(
        workers.workers.iter().all(|w| w.state == rota_api_types::workers::WorkerState::Offline),
        "the worker did not unregister: {workers:?}"
    );
    server.shut().await;
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
