//! Helpers for the background-worker tests: `rota worker …` commands in a test's own
//! HOME/XDG tree (via `common`), JSON output, the rota processes that belong to that tree
//! (found by their environment in /proc), polling with bounds, and a guard that stops
//! whatever a test left running, even when it fails.

#![allow(dead_code, unreachable_pub)]

use crate::common::{self, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `rota ARGS` in `env` and returns its output (never panics on a non-zero exit).
pub fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::ROTA);
    common::isolate(&mut cmd, env);
    cmd.args(args).output().expect("run rota")
}

/// Like [`run`], with extra environment variables.
pub fn run_with_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::ROTA);
    common::isolate(&mut cmd, env);
    cmd.args(args).envs(vars.iter().copied()).output().expect("run rota")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout as one JSON value.
pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

/// `rota worker status --json [ARGS]`: (exit code, JSON).
pub fn status(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["worker", "status", "--json"];
    a.extend_from_slice(args);
    let o = run(env, &a);
    (code(&o), json(&o))
}

/// Polls `status` until `ok` holds; panics with the last status after `within`.
pub fn wait_status(env: &Env, within: Duration, what: &str, ok: impl Fn(i32, &Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (c, s) = status(env, &[]);
        if ok(c, &s) {
            return s;
        }
        assert!(
            start.elapsed() < within,
            "status never became {what} within {within:?}: exit {c}\n{s:#}\nlog:\n{}",
            log(env)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The default profile's log.
pub fn log(env: &Env) -> String {
    std::fs::read_to_string(env.path("state/rota/workers/default.log")).unwrap_or_default()
}

/// A process of this test's tree.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub argv: Vec<String>,
    pub instance: Option<String>,
}

impl Proc {
    pub fn is_supervisor(&self) -> bool {
        self.argv.iter().any(|a| a == "supervise")
    }

    /// A worker process run by a supervisor.
    pub fn is_worker(&self) -> bool {
        self.instance.is_some() && !self.is_supervisor()
    }
}

/// Live rota supervisors and supervised workers whose environment is this tree's.
pub fn rota_procs(env: &Env) -> Vec<Proc> {
    let marker = format!("XDG_STATE_HOME={}", env.path("state").display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if !common::pid_alive(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let vars: Vec<String> =
            environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if !vars.contains(&marker) {
            continue;
        }
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let instance = vars.iter().find_map(|v| v.strip_prefix("ROTA_INSTANCE_KEY=")).map(str::to_string);
        let p = Proc { pid, argv, instance };
        if p.is_supervisor() || p.is_worker() {
            out.push(p);
        }
    }
    out
}

/// Process group of `pid` (from /proc).
pub fn pgid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    stat[close + 1..].split_whitespace().nth(2)?.parse().ok()
}

/// Live (non-zombie) processes in group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| common::pid_alive(*pid) && pgid_of(*pid) == Some(pgid))
        .collect()
}

/// Waits until group `pgid` has no live member.
pub fn wait_group_gone(pgid: i32, within: Duration) {
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(start.elapsed() < within, "process group {pgid} still has {:?}", group_members(pgid));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` until true; panics with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -SIG PID`.
pub fn kill(sig: &str, pid: i32) {
    let ok =
        Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The persisted settings of the default profile.
pub fn meta_path(env: &Env) -> PathBuf {
    env.path("state/rota/workers/default.json")
}

/// Stops every background worker of the tree when dropped (hard stop, then KILL of
/// whatever rota process of the tree is left), so a failing test leaks nothing. It keeps
/// only the tree's path, so the test may still change its `Env`.
pub struct Cleanup {
    root: PathBuf,
}

impl Cleanup {
    pub fn new(env: &Env) -> Self {
        Self { root: env.dir.path().to_path_buf() }
    }

    fn rota(&self, args: &[&str]) {
        let p = |d: &str| self.root.join(d);
        let _ = Command::new(common::ROTA)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", p("home"))
            .env("XDG_DATA_HOME", p("data"))
            .env("XDG_STATE_HOME", p("state"))
            .env("XDG_CONFIG_HOME", p("config"))
            .env("XDG_RUNTIME_DIR", p("runtime"))
            .args(args)
            .output();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.root.join("state/rota/workers")) else { return };
        let keys: Vec<String> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".state.json").map(str::to_string))
            .collect();
        for key in keys {
            match key.strip_prefix("node-") {
                Some(node) => self.rota(&["worker", "multi", "stop", node, "--mode", "hard"]),
                None if key == "default" => self.rota(&["worker", "stop", "--mode", "hard"]),
                None if key == "server" => self.rota(&["server", "stop"]),
                None => self.rota(&[
                    "worker",
                    "stop",
                    "--mode",
                    "hard",
                    "--profile",
                    key.trim_start_matches("profile-"),
                ]),
            }
        }
        let marker = format!("XDG_STATE_HOME={}", self.root.join("state").display());
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
            let text = String::from_utf8_lossy(&environ);
            let ours = text.split('\0').any(|v| v == marker);
            let rota = text.split('\0').any(|v| v.starts_with("ROTA_INSTANCE_KEY="))
                || std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("supervise"));
            if ours && rota {
                let _ = Command::new("kill").arg("-KILL").arg(e.file_name()).status();
            }
        }
    }
}
