//! Test harness for the `rota` binary: each test gets its own HOME/XDG tree, a real
//! `rota server` on port 0 (its URL read from the `rota server listening on URL` line it
//! prints on stderr) and real `rota worker` processes. Synchronous on purpose, so any test
//! can use it. Timing bounds derive from the lease settings below, with wide margins.

#![allow(dead_code, unreachable_pub)]

pub mod netns;
pub mod procs;
pub mod require;
pub mod size;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The binary under test.
pub const ROTA: &str = env!("CARGO_BIN_EXE_rota");

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
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the server, or a closed port before one is started.
    pub url: String,
    server: Option<Proc>,
}

impl Env {
    /// An isolated tree with no server (`url` points at a port nothing listens on).
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["home", "data", "state", "config", "runtime"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Env { dir, url: "http://127.0.0.1:1".into(), server: None }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Where `rota` keeps its data in this tree (tokens, default database).
    pub fn data_dir(&self) -> PathBuf {
        self.path("data/rota")
    }

    /// The server's stderr so far (for assertion messages).
    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn stop_server(&mut self) -> Option<i32> {
        self.server.take().and_then(|mut p| p.terminate(Duration::from_secs(30)))
    }
}

/// A `rota` command run in `env`'s tree with a clean environment, pointed at its server.
pub fn rota(env: &Env) -> assert_cmd::Command {
    let mut std_cmd = Command::new(ROTA);
    isolate(&mut std_cmd, env);
    let mut cmd = assert_cmd::Command::from_std(std_cmd);
    cmd.timeout(bound());
    cmd
}

/// Gives `cmd` a clean environment inside `env`'s tree, pointed at its server.
pub fn isolate(cmd: &mut Command, env: &Env) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("XDG_DATA_HOME", env.path("data"))
        .env("XDG_STATE_HOME", env.path("state"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("XDG_RUNTIME_DIR", env.path("runtime"))
        .env("ROTA_SERVER", &env.url)
        .env("ROTA_LOG", "info")
        .env("NO_COLOR", "1");
}

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

impl Env {
    /// Starts (or restarts) this tree's server on a fresh port; `url` follows it.
    pub fn start_server(&mut self, args: &[&str]) {
        self.start_server_at("127.0.0.1", HEARTBEAT, LEASE_TTL, args);
    }

    /// Like [`Env::start_server`], listening on `addr` (port 0) with these lease timings;
    /// a non-loopback `addr` needs `--allow-remote` in `args`.
    pub fn start_server_at(&mut self, addr: &str, heartbeat: Duration, lease_ttl: Duration, args: &[&str]) {
        let mut cmd = Command::new(ROTA);
        isolate(&mut cmd, self);
        cmd.args(["server", "--listen", &format!("{addr}:0")])
            .arg("--heartbeat-interval")
            .arg(format!("{}ms", heartbeat.as_millis()))
            .arg("--lease-ttl")
            .arg(format!("{}ms", lease_ttl.as_millis()))
            .args(args);
        let (proc, line) = Proc::spawn(cmd, "rota server listening on ");
        let url = line.split_whitespace().last().expect("url").to_string();
        assert!(url.starts_with(&format!("http://{addr}:")), "unexpected listening line: {line}");
        self.url = url;
        self.server = Some(proc);
    }

    /// The join token the server of this tree wrote on its first start.
    pub fn join_token(&self) -> String {
        let path = self.data_dir().join("join.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_string()
    }
}

/// `rota worker run --name NAME` against `env`'s server; returns once it registered.
pub fn spawn_worker(env: &Env, name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(ROTA);
    isolate(&mut cmd, env);
    cmd.args(["worker", "run", "--name", name, "--workspace"])
        .arg(env.path(&format!("ws-{name}")))
        .args(args);
    Proc::spawn(cmd, "rota worker ready").0
}

/// A background `rota` process whose stderr is collected; SIGTERM then KILL on drop.
pub struct Proc {
    pub child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` without waiting for anything (its stderr is collected).
    pub fn start(cmd: Command) -> Proc {
        Self::start_watching(cmd, None).0
    }

    fn start_watching(mut cmd: Command, ready: Option<&str>) -> (Proc, mpsc::Receiver<String>) {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rota");
        let stderr = child.stderr.take().expect("stderr");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let (sink, wanted) = (output.clone(), ready.map(str::to_string));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if wanted.as_ref().is_some_and(|w| line.contains(w.as_str())) {
                    let _ = tx.send(line.clone());
                }
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        (Proc { child, output }, rx)
    }

    /// Spawns `cmd` and waits until a stderr line contains `ready`; returns that line.
    pub fn spawn(cmd: Command, ready: &str) -> (Proc, String) {
        let (mut proc, rx) = Self::start_watching(cmd, Some(ready));
        match rx.recv_timeout(bound()) {
            Ok(line) => (proc, line),
            Err(_) => {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                panic!("rota did not print {ready:?} within {:?}; stderr:\n{}", bound(), proc.output());
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Waits for exit; `None` if it was killed by a signal. Panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "rota (pid {}) did not exit within {within:?}; stderr:\n{}",
                    self.pid(),
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        self.signal("TERM");
        self.wait_exit(within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rota job submit --json ARGS...`; returns the job id.
pub fn submit(env: &Env, args: &[&str]) -> String {
    let out = rota(env).args(["job", "submit", "--json"]).args(args).output().expect("rota job submit");
    assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("submit --json prints JSON");
    v["id"].as_str().expect("id").to_string()
}

/// `rota job show ID --json`.
pub fn show_json(env: &Env, id: &str) -> Value {
    let out = rota(env).args(["job", "show", id, "--json"]).output().expect("rota job show");
    assert!(out.status.success(), "show failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("show --json prints JSON")
}

/// Polls `rota job show --json` until the job's state is one of `states`.
pub fn wait_for_state(env: &Env, id: &str, states: &[&str], within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let job = show_json(env, id);
        let state = job["state"].as_str().unwrap_or_default().to_string();
        if states.contains(&state.as_str()) {
            return job;
        }
        if start.elapsed() > within {
            panic!(
                "job {id} is {state}, wanted one of {states:?} within {within:?}\n{job:#}\nserver:\n{}",
                env.server_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the job is terminal (succeeded, failed, cancelled, revoked).
pub fn wait_for_end(env: &Env, id: &str) -> Value {
    wait_for_state(env, id, &["succeeded", "failed", "cancelled", "revoked"], bound())
}

/// Replaces values that change from run to run (ids, times, pids) with placeholders, so
/// JSON output can be snapshot-tested. A pid may or may not be reported yet, so it is
/// replaced even when null.
pub fn redact(v: &mut Value) {
    const VOLATILE: &[&str] = &[
        "id",
        "attemptId",
        "sessionId",
        "createdAt",
        "finishedAt",
        "startedAt",
        "runAfter",
        "deadline",
        "lastHeartbeatAt",
        "registeredAt",
    ];
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "pid" || (VOLATILE.contains(&k.as_str()) && !val.is_null()) {
                    *val = Value::String(format!("[{k}]"));
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Reads a file that a step writes, waiting until it exists and is not empty.
pub fn wait_file(path: &Path, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s.trim().to_string();
        }
        assert!(start.elapsed() < within, "{} did not appear within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a file exists (a step's "I have started" marker).
pub fn wait_file_exists(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < within, "{} did not appear within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}
