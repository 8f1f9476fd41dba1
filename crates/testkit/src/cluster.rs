//! A real rota cluster for async end-to-end tests: an [`Env`] whose server (on port 0,
//! database `rota.db` in the tree, or the tree's PostgreSQL database) is reached through an
//! API client, and `rota worker run` processes registered against it. Timing bounds derive
//! from the configured heartbeat and TTL.

use crate::{Backend, Env, Proc, isolate, rota_bin, wait_for};
use rota_client::Client;
use rota_domain::JobId;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Lease settings for a test cluster.
#[derive(Clone, Copy)]
pub struct Timing {
    /// Heartbeat interval told to workers.
    pub heartbeat: Duration,
    /// Lease TTL.
    pub ttl: Duration,
}

impl Timing {
    /// Short leases so loss is detected quickly.
    pub const FAST: Timing = Timing { heartbeat: Duration::from_millis(300), ttl: Duration::from_secs(2) };
    /// Bound for "within a few leases", generous for a loaded 2-core CI machine.
    pub fn bound(&self) -> Duration {
        self.ttl * 6 + Duration::from_secs(10)
    }
}

/// A server in its own tree, with its tokens and an admin client. Derefs to its [`Env`].
pub struct Cluster {
    /// The tree and the server process.
    pub env: Env,
    /// Its lease settings.
    pub timing: Timing,
    /// The admin token the server created.
    pub admin_token: String,
    /// The join token the server created.
    pub join_token: String,
    /// An admin client of the server.
    pub client: Client,
}

impl Deref for Cluster {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Env {
        &mut self.env
    }
}

impl Cluster {
    /// A fresh tree on SQLite with a server on `127.0.0.1:0`, healthy.
    pub async fn start(timing: Timing) -> Cluster {
        Self::on(Backend::Sqlite, timing).await
    }

    /// A fresh tree on `backend` with a server on `127.0.0.1:0`, healthy (see [`Env::on`]).
    pub async fn on(backend: Backend, timing: Timing) -> Cluster {
        let mut c = Cluster {
            env: Env::on(backend),
            timing,
            admin_token: String::new(),
            join_token: String::new(),
            client: Client::new("127.0.0.1:1", None).expect("client"),
        };
        c.start_server("127.0.0.1:0").await;
        c
    }

    /// Starts the server listening on `listen` (its earlier address restarts it there).
    pub async fn start_server(&mut self, listen: &str) {
        let file = self.env.path("rota.db");
        let file = file.to_str().expect("utf-8 path").to_string();
        // On PostgreSQL the tree's database, which `Env` passes itself.
        let args: &[&str] = match self.env.backend() {
            Backend::Sqlite => &["--database", &file],
            Backend::Postgres => &[],
        };
        self.env.start_server_on(listen, self.timing.heartbeat, self.timing.ttl, args);
        let root = self.env.dir.path().to_path_buf();
        self.admin_token = crate::server::Server::admin_token(&root).unwrap_or_else(|e| panic!("{e}"));
        self.join_token = crate::server::Server::join_token(&root).unwrap_or_else(|e| panic!("{e}"));
        self.client = Client::new(&self.env.url, Some(self.admin_token.clone())).expect("client");
        wait_for(Duration::from_secs(20), "server health", || async { self.client.healthz().await.is_ok() })
            .await;
    }

    /// A fresh directory in the cluster's tree for a step's marker files; its path.
    pub fn marker_dir(&self, name: &str) -> String {
        let p = self.path(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p.display().to_string()
    }

    /// A `rota` command isolated in this cluster's tree, pointed at the server.
    pub fn rota(&self) -> Command {
        let mut cmd = Command::new(rota_bin());
        isolate(&mut cmd, &self.env);
        cmd
    }

    /// The server's `host:port`.
    pub fn listen_addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Starts `rota worker run` named `name` with its own workspace; waits until it is
    /// registered. KILLed on drop.
    pub async fn worker(&self, name: &str, concurrency: u32) -> Proc {
        self.worker_with(name, concurrency, &self.path(&format!("ws-{name}")), &[]).await
    }

    /// Like [`Cluster::worker`], in `workspace` with extra environment variables.
    pub async fn worker_with(
        &self,
        name: &str,
        concurrency: u32,
        workspace: &Path,
        extra_env: &[(&str, &str)],
    ) -> Proc {
        let before = self.session_of(name).await;
        let mut cmd = self.rota();
        cmd.args(["worker", "run", "--server", &self.url, "--join-token", &self.join_token, "--name", name])
            .args(["--concurrency", &concurrency.to_string(), "--workspace"])
            .arg(workspace)
            .envs(extra_env.iter().copied());
        let w = Proc::start(cmd).kill_on_drop();
        wait_for(Duration::from_secs(30), &format!("worker {name} registered"), || async {
            let now = self.session_of(name).await;
            now.is_some() && now != before
        })
        .await;
        w
    }

    async fn session_of(&self, name: &str) -> Option<String> {
        let list = self.client.list_workers().await.ok()?;
        list.workers
            .into_iter()
            .find(|w| w.name == name && w.state == rota_api_types::workers::WorkerState::Active)
            .map(|w| w.session_id.to_string())
    }

    /// Submits a job of one step named `s` running `run`; returns its id.
    pub fn submit_step(&self, run: &str) -> JobId {
        self.submit_file(&format!("steps:\n  - name: s\n    run: {}\n", crate::yaml_str(run)))
    }

    /// Submits a job document (YAML or JSON) through `rota job submit -f`.
    pub fn submit_file(&self, doc: &str) -> JobId {
        let path = self.path(&format!("job-{}.yaml", JobId::new()));
        std::fs::write(&path, doc).expect("write job");
        let out =
            self.rota().args(["job", "submit", "--json", "-f"]).arg(&path).output().expect("rota job submit");
        assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("submit --json output");
        v["id"].as_str().expect("id").parse().expect("job id")
    }

    /// The job's state through the API (or the error, as text).
    pub async fn job_state(&self, id: JobId) -> String {
        self.client.get_job(id).await.map(|d| d.summary.state).unwrap_or_else(|e| format!("error: {e}"))
    }

    /// Waits until the job is in one of `states`; panics with the job and logs otherwise.
    pub async fn wait_state(
        &self,
        id: JobId,
        states: &[&str],
        within: Duration,
    ) -> rota_api_types::jobs::JobDetail {
        let start = Instant::now();
        loop {
            if let Ok(d) = self.client.get_job(id).await {
                if states.contains(&d.summary.state.as_str()) {
                    return d;
                }
                if start.elapsed() > within {
                    panic!(
                        "job {id} is {} (reason {:?}), wanted {states:?} within {within:?}\n{:#?}\nserver log:\n{}",
                        d.summary.state,
                        d.summary.reason,
                        d.step_details,
                        self.server_log()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits (without blocking the runtime) for a file to exist and be non-empty; its trimmed
/// text.
pub async fn wait_file(path: &Path, within: Duration) -> String {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::wait_file(&p, within)).await.expect("wait_file")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A crash, as before: tests that end mid-way must not wait for a clean shutdown.
        self.env.kill_server();
    }
}
