//! The background-worker tests' view: `rota worker …` commands in a test's own HOME/XDG
//! tree, JSON output, the rota supervisors and workers that belong to that tree (found by
//! their environment in /proc), and a guard that stops whatever a test left running, even
//! when it fails.

use crate::{Env, isolate, isolate_tree, rota_bin};
use rota_worker::procfs;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `rota ARGS` in `env` and returns its output (never panics on a non-zero exit).
pub fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, env);
    cmd.args(args).output().expect("run rota")
}

/// Like [`run`], with extra environment variables.
pub fn run_with_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, env);
    cmd.args(args).envs(vars.iter().copied()).output().expect("run rota")
}

/// The `worker start` flags of a background worker that crash-loops once `crash` exists
/// (the test hook `--test-crash-file`): restarted after 200 ms, `failed` after 3 exits each
/// under 20 s. Needs a binary with the test hooks.
pub fn crash_loop_flags(crash: &Path) -> Vec<String> {
    let flags = ["--restart-delay", "200ms", "--max-restarts", "3", "--min-uptime", "20s"];
    ["--test-crash-file".to_string(), path_str(crash)].into_iter().chain(flags.map(String::from)).collect()
}

/// Starts `env`'s background worker with [`crash_loop_flags`] (`worker start --json`); the
/// file that, once written, makes it crash-loop.
pub fn start_crash_loopable(env: &Env) -> PathBuf {
    let crash = env.path("crash-now");
    let flags = crash_loop_flags(&crash);
    let mut args = vec!["worker", "start", "--json"];
    args.extend(flags.iter().map(String::as_str));
    let o = run(env, &args);
    assert_eq!(code(&o), 0, "start failed: {}\nlog:\n{}", stderr(&o), log(env));
    crash
}

/// Its exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Its stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its stderr as text.
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

/// A rota supervisor or supervised worker of this test's tree.
#[derive(Debug, Clone)]
pub struct TreeProc {
    /// Its pid.
    pub pid: i32,
    /// Its argv.
    pub argv: Vec<String>,
    /// Its `ROTA_INSTANCE_KEY` (set for supervised workers).
    pub instance: Option<String>,
}

impl TreeProc {
    /// A supervisor (`rota ... supervise`).
    pub fn is_supervisor(&self) -> bool {
        self.argv.iter().any(|a| a == "supervise")
    }

    /// A worker process run by a supervisor.
    pub fn is_worker(&self) -> bool {
        self.instance.is_some() && !self.is_supervisor()
    }
}

/// Live rota supervisors and supervised workers whose environment is this tree's.
pub fn rota_procs(env: &Env) -> Vec<TreeProc> {
    let marker = format!("XDG_STATE_HOME={}", env.path("state").display());
    let mut out = Vec::new();
    for p in procfs::all_processes().expect("/proc") {
        if p.is_zombie() {
            continue;
        }
        let Some(vars) = procfs::environ(p.pid) else { continue };
        if !vars.contains(&marker) {
            continue;
        }
        let argv = procfs::cmdline(p.pid).unwrap_or_default();
        let instance = vars.iter().find_map(|v| v.strip_prefix("ROTA_INSTANCE_KEY=")).map(str::to_string);
        let p = TreeProc { pid: p.pid, argv, instance };
        if p.is_supervisor() || p.is_worker() {
            out.push(p);
        }
    }
    out
}

/// A path as text.
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
    /// Guards `env`'s tree.
    pub fn new(env: &Env) -> Self {
        Self { root: env.dir.path().to_path_buf() }
    }

    fn rota(&self, args: &[&str]) {
        let mut cmd = Command::new(rota_bin());
        isolate_tree(&mut cmd, &self.root, None);
        let _ = cmd.args(args).output();
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
        for p in procfs::all_processes().unwrap_or_default() {
            let Some(vars) = procfs::environ(p.pid) else { continue };
            let ours = vars.contains(&marker);
            let rota = vars.iter().any(|v| v.starts_with("ROTA_INSTANCE_KEY="))
                || procfs::cmdline(p.pid).is_some_and(|argv| argv.iter().any(|a| a.contains("supervise")));
            if ours && rota {
                let _ = Command::new("kill").arg("-KILL").arg(p.pid.to_string()).status();
            }
        }
    }
}
