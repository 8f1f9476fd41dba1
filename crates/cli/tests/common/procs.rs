//! Process helpers for end-to-end tests (used by both test kits): which processes belong to
//! a job, a worker's step spawner, sending signals. Read-only except `kill`.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::time::{Duration, Instant};

/// True if the process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = s.rfind(')').and_then(|i| s[i + 2..].chars().next());
    matches!(state, Some(c) if c != 'Z' && c != 'X')
}

/// Live (non-zombie) processes whose environment says they belong to job `job` (every
/// step process carries `ROTA_JOB_ID`; readable here because tests run as their owner).
pub fn job_processes(job: impl std::fmt::Display) -> Vec<i32> {
    let needle = format!("ROTA_JOB_ID={job}");
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Polls until no process of job `job` is alive; returns how long that took.
pub fn wait_job_processes_gone(job: impl std::fmt::Display, within: Duration) -> Duration {
    let start = Instant::now();
    while !job_processes(&job).is_empty() {
        assert!(
            start.elapsed() < within,
            "processes of job {job} still alive after {within:?}: {:?}",
            job_processes(&job)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The step spawner helper(s) of worker process `worker`: its children running `__spawner`.
pub fn spawners_of(worker: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = s.rfind(')').and_then(|i| s[i + 2..].split_whitespace().nth(1)?.parse::<i32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(worker) && cmd.split(|b| *b == 0).any(|a| a == b"__spawner")
        })
        .collect()
}

/// Runs `kill ARGS...` and asserts it succeeded.
pub fn kill(args: &[&str]) {
    let st = Command::new("kill").args(args).status().expect("kill");
    assert!(st.success(), "kill {args:?} failed");
}
