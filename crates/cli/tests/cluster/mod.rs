//! A real rota cluster for end-to-end tests: `rota server` on port 0 and `rota worker`
#![allow(unreachable_pub)]
//! processes, each test in its own HOME/XDG tree, plus /proc helpers to prove that no
//! process of a step remains. Timing bounds derive from the configured heartbeat and TTL.

#![allow(dead_code)]

use rota_client::Client;
use rota_domain::JobId;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ROTA: &str = env!("CARGO_BIN_EXE_rota");

/// Lease settings for a test cluster.
#[derive(Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
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

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub timing: Timing,
    pub server: Option<Child>,
    pub url: String,
    pub admin_token: String,
    pub join_token: String,
    pub client: Client,
}

fn fmt_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A YAML single-quoted scalar holding `s` exactly (for `run:` lines in job documents).
pub fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Cluster {
    /// A fresh directory in the cluster's tree for a step's marker files; its path.
    pub fn marker_dir(&self, name: &str) -> String {
        let p = self.path(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p.display().to_string()
    }

    pub async fn start(timing: Timing) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["home", "data", "state", "config", "runtime"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let mut c = Cluster {
            dir,
            timing,
            server: None,
            url: String::new(),
            admin_token: String::new(),
            join_token: String::new(),
            client: Client::new("127.0.0.1:1", None).expect("client"),
        };
        c.start_server("127.0.0.1:0").await;
        c
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A `rota` command isolated in this cluster's HOME/XDG tree, pointed at the server.
    pub fn rota(&self) -> Command {
        let mut cmd = Command::new(ROTA);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .env("ROTA_LOG", "info");
        if !self.url.is_empty() {
            cmd.env("ROTA_SERVER", &self.url);
        }
        cmd
    }

    pub async fn start_server(&mut self, listen: &str) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.path("server.log")).expect("log");
        let mut child = self
            .rota()
            .args(["server", "--listen", listen, "--database"])
            .arg(self.path("rota.db"))
            .args([
                "--heartbeat-interval",
                &fmt_ms(self.timing.heartbeat),
                "--lease-ttl",
                &fmt_ms(self.timing.ttl),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rota server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = log;
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if !sent && let Some(pos) = line.find("http://") {
                    let url: String = line[pos..].split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("rota server did not print its URL; log:\n{}", self.read("server.log"))
        });
        self.url = url.trim_end_matches(['/', ',', '.']).to_string();
        self.server = Some(child);
        self.admin_token =
            std::fs::read_to_string(self.path("data/rota/admin.token")).expect("admin.token").trim().into();
        self.join_token =
            std::fs::read_to_string(self.path("data/rota/join.token")).expect("join.token").trim().into();
        self.client = Client::new(&self.url, Some(self.admin_token.clone())).expect("client");
        wait_for(Duration::from_secs(20), "server health", || async { self.client.healthz().await.is_ok() })
            .await;
    }

    /// The server's `host:port`.
    pub fn listen_addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_default()
    }

    /// Starts `rota worker run` named `name` with its own workspace; waits until it is
    /// registered.
    pub async fn worker(&self, name: &str, concurrency: u32) -> Worker {
        self.worker_with(name, concurrency, &self.path(&format!("ws-{name}")), &[]).await
    }

    pub async fn worker_with(
        &self,
        name: &str,
        concurrency: u32,
        workspace: &Path,
        extra_env: &[(&str, &str)],
    ) -> Worker {
        let before = self.session_of(name).await;
        let log_path = self.path(&format!("worker-{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        let mut cmd = self.rota();
        cmd.args(["worker", "run", "--server", &self.url, "--join-token", &self.join_token, "--name", name])
            .args(["--concurrency", &concurrency.to_string(), "--workspace"])
            .arg(workspace)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rota worker");
        let w = Worker { child, name: name.to_string(), log: log_path };
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
            .find(|w| w.name == name && format!("{:?}", w.state).to_lowercase() == "active")
            .map(|w| w.session_id.to_string())
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
                        self.read("server.log")
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_server();
    }
}

pub struct Worker {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Worker {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st =
            Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().expect("kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the worker to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("worker {} did not exit within {within:?}; log:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `within` passes.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a file to exist and be non-empty; returns its trimmed text.
pub async fn wait_file(path: &Path, within: Duration) -> String {
    let p = path.to_path_buf();
    wait_for(within, &format!("file {}", p.display()), || {
        let p = p.clone();
        async move { std::fs::read_to_string(&p).map(|s| !s.trim().is_empty()).unwrap_or(false) }
    })
    .await;
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

/// (state, pgrp) of a process from /proc, None if it does not exist.
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(stat(*pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Waits until no live process remains in the group and the given pids are gone.
pub async fn wait_gone(pgid: i32, pids: &[i32], within: Duration) {
    let pids = pids.to_vec();
    wait_for(within, &format!("process group {pgid} and pids {pids:?} to be gone"), || {
        let pids = pids.clone();
        async move { group_members(pgid).is_empty() && pids.iter().all(|p| !pid_alive(*p)) }
    })
    .await;
}

// Process helpers shared with the synchronous kit (one file, two kits).
#[path = "../common/procs.rs"]
mod procs;
#[allow(unused_imports)]
pub use procs::*;

// The one skip helper, shared with the synchronous kit.
#[path = "../common/require.rs"]
pub mod require;

// Scenario sizes (small in CI, full with ROTA_TEST_SIZE=full), shared with the synchronous kit.
#[path = "../common/size.rs"]
pub mod size;
