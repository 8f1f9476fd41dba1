//! Leadership (issue 11, acceptance 3): the sweeper acts only while its server leads. With
//! leadership forced off nothing expires; forced on in two servers at once over one
//! database, every lease still expires exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use rota_api_types::worker::{ClaimRequest, RegisterRequest};
use rota_client::{Client, WorkerClient};
use rota_domain::{AttemptStatus, JobId, JobSpec, StepSpec};
use rota_server::{Seams, ServerConfig};
use rota_store::leader::{Leadership, ServerInfo};
use rota_testkit::inproc::{JOIN, Server};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Leadership a test switches on and off.
struct Forced {
    on: AtomicBool,
    /// What `others_serving` answers.
    others: bool,
    me: ServerInfo,
}

#[async_trait]
impl Leadership for Forced {
    async fn lead(&self) -> rota_store::Result<bool> {
        Ok(self.on.load(Ordering::SeqCst))
    }
    async fn resign(&self) -> rota_store::Result<()> {
        Ok(())
    }
    async fn leader(&self) -> rota_store::Result<Option<ServerInfo>> {
        Ok(self.on.load(Ordering::SeqCst).then(|| self.me.clone()))
    }
    async fn others_serving(&self) -> rota_store::Result<bool> {
        Ok(self.others)
    }
}

const TTL_MS: u64 = 600;

async fn server(db: &std::path::Path, on: bool) -> (Server, Arc<Forced>) {
    // As in a fleet of servers: others serve, so no lease is extended at start.
    server_among(db, on, true).await
}

async fn server_among(db: &std::path::Path, on: bool, others: bool) -> (Server, Arc<Forced>) {
    let config = ServerConfig {
        heartbeat_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_millis(TTL_MS),
        max_poll: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let seams = Seams::single("test");
    let forced = Arc::new(Forced { on: AtomicBool::new(on), others, me: seams.me.clone() });
    let seams = seams.with_leader(forced.clone());
    (Server::start_with_seams(db, None, config, seams).await, forced)
}

/// Submits `n` one-step jobs and claims them all for a worker that then goes silent (it
/// never heartbeats).
async fn claimed_by_a_silent_worker(s: &Server, n: usize) -> Vec<JobId> {
    let admin = s.client();
    let mut ids = Vec::new();
    for i in 0..n {
        let spec = JobSpec::new(vec![StepSpec::new(format!("s{i}"), "true")]);
        ids.push(admin.submit(&spec, None).await.unwrap().id);
    }
    let w = WorkerClient::new(&s.addr.to_string()).unwrap();
    let req: RegisterRequest = serde_json::from_value(serde_json::json!({
        "protocolVersion": rota_domain::PROTOCOL_VERSION, "name": "silent", "host": "h", "version": "t",
        "queues": ["default"], "concurrency": n
    }))
    .unwrap();
    w.register(JOIN, &req).await.unwrap();
    // One at a time, a little apart: the leases end at different moments, so two
    // sweepers ticking out of step both find some to expire.
    let mut got = 0;
    while got < n {
        got += w.claim(&ClaimRequest { max: 1, wait_ms: 0 }).await.unwrap().attempts.len();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    ids
}

async fn statuses(admin: &Client, ids: &[JobId]) -> Vec<Vec<AttemptStatus>> {
    let mut out = Vec::new();
    for id in ids {
        let job = admin.get_job(*id).await.unwrap();
        out.push(job.step_details.iter().flat_map(|s| s.attempts.iter().map(|a| a.status)).collect());
    }
    out
}

async fn lost_total(admin: &Client) -> u64 {
    let text = admin.metrics_text().await.unwrap();
    // Summed over its causes (only `lease_expired` moves here).
    let lines: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("rota_attempts_lost_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(!lines.is_empty(), "the lost counter");
    lines.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_does_not_lead_expires_nothing_until_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let (s, forced) = server(&dir.path().join("rota.db"), false).await;
    let ids = claimed_by_a_silent_worker(&s, 3).await;
    let admin = s.client();

    // Many times the lease: a leading sweeper would have expired every one by now.
    tokio::time::sleep(Duration::from_millis(TTL_MS * 5)).await;
    let before = statuses(&admin, &ids).await;
    assert!(before.iter().all(|a| a == &[AttemptStatus::Running]), "nothing expires: {before:?}");
    assert_eq!(lost_total(&admin).await, 0);

    // Leadership comes: the leases that ended long ago expire now.
    forced.on.store(true, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        let now = statuses(&admin, &ids).await;
        if now.iter().all(|a| a.first() == Some(&AttemptStatus::Lost)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never expired once leading: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("expired {:?} after leadership came", started.elapsed());
    assert_eq!(lost_total(&admin).await, 3);
    s.shut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_leaders_at_once_over_one_database_expire_every_lease_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rota.db");
    // Two servers, each with its own store on the one database file, both leading.
    let (a, _) = server(&db, true).await;
    let (b, _) = server(&db, true).await;
    const N: usize = 40;
    let ids = claimed_by_a_silent_worker(&a, N).await;
    let (ca, cb) = (a.client(), b.client());

    let started = Instant::now();
    loop {
        let now = statuses(&cb, &ids).await;
        if now.iter().all(|a| a.first() == Some(&AttemptStatus::Lost)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never all expired: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let both sweepers run several more rounds over the same rows.
    tokio::time::sleep(Duration::from_millis(TTL_MS * 3)).await;
    let (la, lb) = (lost_total(&ca).await, lost_total(&cb).await);
    eprintln!("all {N} expired after {:?}: server a expired {la}, server b {lb}", started.elapsed());
    assert_eq!(la + lb, N as u64, "each lease expired by exactly one of the two leaders");
    for (id, attempts) in ids.iter().zip(statuses(&ca, &ids).await) {
        assert_eq!(
            attempts.iter().filter(|s| **s == AttemptStatus::Lost).count(),
            1,
            "job {id}: {attempts:?}"
        );
    }
    a.shut().await;
    b.shut().await;
}

/// The lease the one attempt of `id` holds, read from the database itself.
async fn lease_of(db: &std::path::Path, id: JobId) -> chrono::DateTime<chrono::Utc> {
    use rota_store::JobStore;
    let store =
        rota_store_sqlite::SqliteStore::open(db, rota_store_sqlite::SqliteOptions::default()).unwrap();
    let job = store.get_job(id).await.unwrap();
    job.steps[0].attempts[0].lease_expires_at.expect("a running attempt has a lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_are_extended_at_start_only_when_no_other_server_was_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rota.db");
    let (first, _) = server_among(&db, false, true).await;
    let id = claimed_by_a_silent_worker(&first, 1).await[0];
    first.shut().await;
    let claimed = lease_of(&db, id).await;

    // Others serve (a rolling restart): they keep the leases; this start leaves them.
    let (second, _) = server_among(&db, false, true).await;
    second.shut().await;
    assert_eq!(lease_of(&db, id).await, claimed, "not extended while others serve");

    // Nobody was serving (a full outage): every live lease gets a full TTL from now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (third, _) = server_among(&db, false, false).await;
    third.shut().await;
    let extended = lease_of(&db, id).await;
    assert!(extended > claimed, "extended after a full outage: {claimed} -> {extended}");
}
