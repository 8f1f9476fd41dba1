//! [`Env`]: a test's private machine, a temp HOME/XDG tree on a [`Backend`] with, once
//! started, its own `rota server` on port 0 (through [`crate::server`], the one way to start
//! one). On PostgreSQL the tree owns a database of its own for as long as it lives, and
//! every server it starts (restarts included) runs on it. Sync, so any test can use it.
//! Timing bounds derive from the lease settings below, with margins.

use crate::backend::Backend;
use crate::postgres::TestDb;
use crate::proc::Proc;
use crate::rota_bin;
use crate::server::{self, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Heartbeat interval the test server tells workers to use.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Lease TTL of the test server.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// "Within a few leases": generous, because CI is a loaded 2-core machine.
pub fn bound() -> Duration {
    LEASE_TTL * 6 + Duration::from_secs(20)
}

/// A test's private machine: a temp HOME/XDG tree and, once started, a server.
pub struct Env {
    /// The tree's root (removed on drop).
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the server, or a closed port before one is started.
    pub url: String,
    /// Given to every `rota` of this tree as `ROTA_CA_CERT` (a server over TLS).
    pub ca_cert: Option<std::path::PathBuf>,
    server: Option<Server>,
    backend: Backend,
    /// Last, so it outlives the server (dropped with the tree).
    db: Option<TestDb>,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// An isolated tree on SQLite with no server (`url` points at a port nothing listens on).
    pub fn new() -> Env {
        Self::on(Backend::Sqlite)
    }

    /// An isolated tree whose servers run on `backend`, with no server yet. On PostgreSQL
    /// it creates the tree's database; the caller has checked [`Backend::available`] (the
    /// tests of [`crate::both_backends!`] do).
    pub fn on(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        server::make_tree(dir.path()).expect("mkdir");
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDb::create_blocking().unwrap_or_else(|| {
                panic!("no PostgreSQL for this test: check Backend::Postgres.available() first")
            })),
        };
        Env { dir, url: "http://127.0.0.1:1".into(), ca_cert: None, server: None, backend, db }
    }

    /// The backend its servers run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL of the tree's PostgreSQL database (`None` on SQLite): what its servers get
    /// as `--database`, for a test that starts one of its own (`rota dev`, a second server).
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// A path in the tree.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Where `rota` keeps its data in this tree (tokens, default database).
    pub fn data_dir(&self) -> PathBuf {
        self.path("data/rota")
    }

    /// The server's stderr so far (for assertion messages).
    pub fn server_log(&self) -> String {
        self.server.as_ref().map(|s| s.proc.output()).unwrap_or_default()
    }

    /// The running server, if any.
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn stop_server(&mut self) -> Option<i32> {
        self.server.take().and_then(|mut s| s.proc.terminate(Duration::from_secs(30)))
    }

    /// KILLs the server (a crash: nothing is flushed or said goodbye to).
    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.proc.kill();
        }
    }

    /// Starts (or restarts) this tree's server on a fresh port; `url` follows it.
    pub fn start_server(&mut self, args: &[&str]) {
        self.start_server_at("127.0.0.1", HEARTBEAT, LEASE_TTL, args);
    }

    /// Like [`Env::start_server`], listening on `addr` (port 0) with these lease timings;
    /// a non-loopback `addr` needs `--allow-remote` in `args`, and `--insecure-http` or
    /// `--tls-cert`/`--tls-key`.
    pub fn start_server_at(&mut self, addr: &str, heartbeat: Duration, lease_ttl: Duration, args: &[&str]) {
        self.start_server_on(&format!("{addr}:0"), heartbeat, lease_ttl, args);
    }

    /// Starts the server listening on `listen` (`host:port`; port 0 for a fresh one, or the
    /// port of an earlier server of this tree to restart it there).
    /// On PostgreSQL it gets `--database` with the tree's database unless `args` name one.
    pub fn start_server_on(&mut self, listen: &str, heartbeat: Duration, lease_ttl: Duration, args: &[&str]) {
        let spec = self.server_spec(listen, heartbeat, lease_ttl, args);
        let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
        let s = server::start(spec).unwrap_or_else(|e| panic!("{e}"));
        let over_tls = args.contains(&"--tls-cert");
        let scheme = if over_tls { "https" } else { "http" };
        assert!(s.url.starts_with(&format!("{scheme}://{host}:")), "unexpected server url {}", s.url);
        self.url = s.url.clone();
        self.server = Some(s);
    }

    /// How [`Env::start_server_on`] starts a server of this tree: listening on `listen`,
    /// with these lease timings, on the tree's backend, with `args` after. Public for a
    /// test that runs a second server in the tree (`server::start(env.server_spec(...))`).
    pub fn server_spec(
        &self,
        listen: &str,
        heartbeat: Duration,
        lease_ttl: Duration,
        args: &[&str],
    ) -> server::Spec {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut full =
            vec!["--heartbeat-interval".to_string(), ms(heartbeat), "--lease-ttl".to_string(), ms(lease_ttl)];
        if let Some(url) = self.database_url()
            && !args.contains(&"--database")
        {
            full.extend(["--database".to_string(), url.to_string()]);
        }
        full.extend(args.iter().map(|a| a.to_string()));
        server::Spec { listen: listen.into(), args: full, ..server::Spec::new(rota_bin(), self.dir.path()) }
    }

    /// The admin token the server of this tree wrote on its first start.
    pub fn admin_token(&self) -> String {
        server::read_token(&self.data_dir().join("admin.token")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The join token the server of this tree wrote on its first start.
    pub fn join_token(&self) -> String {
        server::read_token(&self.data_dir().join("join.token")).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A `rota` command run in `env`'s tree with a clean environment, pointed at its server.
pub fn rota(env: &Env) -> assert_cmd::Command {
    let mut std_cmd = Command::new(rota_bin());
    isolate(&mut std_cmd, env);
    let mut cmd = assert_cmd::Command::from_std(std_cmd);
    cmd.timeout(bound());
    cmd
}

/// Gives `cmd` a clean environment inside `env`'s tree, pointed at its server.
pub fn isolate(cmd: &mut Command, env: &Env) {
    isolate_tree(cmd, env.dir.path(), Some(&env.url));
    if let Some(ca) = &env.ca_cert {
        cmd.env("ROTA_CA_CERT", ca);
    }
}

/// Gives `cmd` a clean environment inside the tree at `root` (HOME, the XDG directories,
/// `ROTA_LOG=info`, no colour), pointed at `server` if given.
pub fn isolate_tree(cmd: &mut Command, root: &Path, server: Option<&str>) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_RUNTIME_DIR", root.join("runtime"))
        .env("ROTA_LOG", "info")
        .env("NO_COLOR", "1");
    if let Some(url) = server {
        cmd.env("ROTA_SERVER", url);
    }
    // The lossy test bus (issue 11): a suite run with it set runs every server with it.
    if let Some(n) = std::env::var_os(LOSSY_BUS) {
        cmd.env(LOSSY_BUS, n);
    }
}

/// Set, every server the tests start loses every Nth bus message (feature `test-bus`).
const LOSSY_BUS: &str = "ROTA_TEST_BUS_DROP_EVERY";

/// A fresh tree with `rota server --listen 127.0.0.1:0` running in it.
pub fn spawn_server() -> Env {
    spawn_server_with(&[])
}

/// Like [`spawn_server`], with extra `rota server` flags.
pub fn spawn_server_with(args: &[&str]) -> Env {
    let mut env = Env::new();
    env.start_server(args);
    env
}

/// `rota worker run --name NAME` against `env`'s server; returns once it registered.
pub fn spawn_worker(env: &Env, name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, env);
    cmd.args(["worker", "run", "--name", name, "--workspace"])
        .arg(env.path(&format!("ws-{name}")))
        .args(args);
    Proc::spawn(cmd, "rota worker ready").0
}
