//! A server and workers inside the test process, for tests of the worker library: the
//! real server (axum + SQLite in the test's temp dir) on port 0 over real HTTP, and
//! `rota_worker::run` with a step spawner that re-executes the test binary. Each test
//! binary that uses [`worker_config`] keeps its own tiny helper test:
//! `#[test] fn spawner_helper() { rota_worker::spawner::serve_if_test_helper(); }`.

use rota_client::Client;
use rota_server::{Seams, ServerConfig};
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use rota_worker::{Ready, ShutdownHandle, WorkerConfig, WorkerError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The admin token of in-process servers.
pub const ADMIN: &str = "admin-token";
/// The join token of in-process servers.
pub const JOIN: &str = "join-token";
/// The name of the helper test each test binary keeps (see the module doc).
pub const SPAWNER_HELPER: &str = "spawner_helper";

/// A server running in this process.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to stop it.
    pub stop: CancellationToken,
    /// Its task (ends once it stopped).
    pub task: JoinHandle<()>,
}

impl Server {
    /// Starts one on its SQLite database `db`, listening on `addr` (port 0 if `None`), with
    /// leases of (heartbeat, TTL) milliseconds.
    pub async fn start(db: &Path, addr: Option<SocketAddr>, lease: (u64, u64)) -> Self {
        let config = ServerConfig {
            heartbeat_interval: Duration::from_millis(lease.0),
            lease_ttl: Duration::from_millis(lease.1),
            // Keeps graceful shutdowns short: they wait for open long-polls.
            max_poll: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        Self::start_with(db, addr, config).await
    }

    /// Starts one with `config`, its tokens replaced by [`ADMIN`] and [`JOIN`].
    pub async fn start_with(db: &Path, addr: Option<SocketAddr>, config: ServerConfig) -> Self {
        Self::start_with_seams(db, addr, config, Seams::single("in-process")).await
    }

    /// As [`Server::start_with`], with the bus and leadership given (tests of leadership;
    /// several servers on one database).
    pub async fn start_with_seams(
        db: &Path,
        addr: Option<SocketAddr>,
        config: ServerConfig,
        seams: Seams,
    ) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(any)).await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let store: Arc<dyn rota_store::JobStore> =
            Arc::new(SqliteStore::open(db, SqliteOptions::default()).expect("open the store"));
        let config = ServerConfig { admin_token: ADMIN.into(), join_token: JOIN.into(), ..config };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { rota_server::run_with(listener, store, config, seams, stop).await.expect("server run") }
        });
        Self { addr, stop, task }
    }

    /// Stops it and waits until it has.
    pub async fn shut(self) {
        self.stop.cancel();
        self.task.await.expect("server task");
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        Client::new(&self.addr.to_string(), Some(ADMIN.into())).expect("client")
    }
}

/// A worker running in this process.
pub struct Worker {
    /// Cancel for a drain (warm shutdown).
    pub shutdown: ShutdownHandle,
    /// Its task.
    pub task: JoinHandle<Result<(), WorkerError>>,
    /// What it reported once registered.
    pub ready: Ready,
}

/// `RUST_LOG=rota_worker=debug cargo test -p rota-worker --test e2e -- --nocapture` shows
/// the worker's (and server's) log.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs a worker with `config`; returns once it registered.
pub async fn start_worker(config: WorkerConfig) -> Worker {
    init_tracing();
    let shutdown = ShutdownHandle::new();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(rota_worker::run_with(config, shutdown.clone(), Some(tx)));
    let ready = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("the worker registered in time")
        .expect("the worker reported ready");
    Worker { shutdown, task, ready }
}

/// A worker config for `server` with workspace `ws`, named `w-<ws's name>`, and the test
/// binary's spawner helper.
pub fn worker_config(server: &Server, ws: &Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(server.addr.to_string(), JOIN, ws);
    c.spawner = Some(rota_worker::spawner::start_in_test_binary(SPAWNER_HELPER).expect("spawner helper"));
    c.name = format!("w-{}", ws.file_name().expect("workspace name").to_string_lossy());
    c
}

/// Reads the pid a step wrote (its last line), waiting until it is there.
pub async fn read_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) =
            std::fs::read_to_string(file).ok().and_then(|s| s.lines().last()?.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "step never wrote {}", file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
