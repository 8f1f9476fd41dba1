//! A worker whose results the server records slower than it hands out steps stops claiming.
//! Issue 19's PostgreSQL soak found a worker of 8 slots holding 6 900 attempts "running"
//! behind results the server had not recorded, all of them lost had the worker died. Now a
//! finished step's slot waits with its result when the result claims for it, and a worker
//! claiming apart stops once a request's worth of results is undelivered. Real server on
//! PostgreSQL, real worker; the recording is held up by a lock a side session takes on one
//! job's row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_client::Client;
use rota_domain::{JobSpec, StepSpec};
use rota_testkit::postgres::TestDb;
use rota_testkit::{Env, bound, spawn_worker, submit};
use std::time::{Duration, Instant};

/// The worker's bound: a full request of results (`report::BATCH_MAX`, 64) for 2 slots.
const UNDELIVERED_BOUND: i64 = 64;
const JOBS: usize = 200;

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stops_claiming_while_its_results_are_not_recorded() {
    let Some(db) = TestDb::create().await else { return };
    let mut env = Env::new();
    env.start_server(&["--database", &db.url]);
    let _worker = spawn_worker(&env, "w", &["--concurrency", "2"]);
    let (side, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);

    // A step that runs long enough for its job's row to be locked before it ends: its
    // result, and every result queued behind it, then waits for the lock.
    let first = submit(&env, &["--", "sleep", "2"]);
    let since = Instant::now();
    while count(&side, &format!("SELECT count(*) FROM jobs WHERE id = '{first}' AND state = 'running'")).await
        == 0
    {
        assert!(since.elapsed() < bound(), "the first job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    side.batch_execute(&format!("BEGIN; SELECT 1 FROM jobs WHERE id = '{first}' FOR UPDATE")).await.unwrap();

    let client = Client::new(&env.url, Some(env.admin_token())).unwrap();
    let jobs: Vec<JobSpec> = (0..JOBS).map(|_| JobSpec::new(vec![StepSpec::new("s", "true")])).collect();
    client.submit_batch(&jobs).await.unwrap();

    // The worker claims and runs until its undelivered results reach the bound, then waits.
    let running = "SELECT count(*) FROM attempts WHERE status = 'running'";
    let watch = Instant::now();
    let (mut most, mut last_change, mut last) = (0, Instant::now(), -1);
    while last_change.elapsed() < Duration::from_secs(4) && watch.elapsed() < bound() {
        let n = count(&side, running).await;
        most = most.max(n);
        if n != last {
            (last, last_change) = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "attempts held running behind unrecorded results: at most {most} (steady after {:?})",
        watch.elapsed()
    );
    // Whatever holds the worker back (a slot handed to a result that claims for it, or the
    // bound on undelivered results when it claims apart), it is the bound at most, plus the
    // 2 slots' steps and one claim's worth in flight when it was reached.
    assert!(most <= UNDELIVERED_BOUND + 4, "{most} attempts running on a worker of 2 slots");
    // And the results really were held up meanwhile: the first job's is still not recorded.
    let held = format!("SELECT count(*) FROM attempts WHERE job_id = '{first}' AND status = 'running'");
    assert_eq!(count(&side, &held).await, 1, "the first result was recorded: the test proved nothing");

    // Recording resumes: every job ends, each once.
    side.batch_execute("COMMIT").await.unwrap();
    let since = Instant::now();
    let done = "SELECT count(*) FROM jobs WHERE state = 'succeeded'";
    while count(&side, done).await < JOBS as i64 + 1 {
        assert!(since.elapsed() < bound() * 2, "jobs did not all finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&side, "SELECT count(*) FROM attempts").await, JOBS as i64 + 1, "one attempt per job");
}
