//! What tests ask `/proc` (through the one reader, `rota_worker::procfs`): whether a pid
//! lives, a process group's live members, a job's processes (by `ROTA_JOB_ID` in their
//! environment, readable as tests run as their owner), a worker's step spawner; and
//! `kill`. Read-only except `kill`.

use rota_worker::procfs;
use std::process::Command;
use std::time::{Duration, Instant};

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    procfs::is_alive(pid)
}

/// Process group of `pid`.
pub fn pgid_of(pid: i32) -> Option<i32> {
    procfs::stat(pid).map(|s| s.pgid)
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    procfs::live_group_members(pgid).into_iter().map(|s| s.pid).collect()
}

/// Waits until group `pgid` has no live member; returns how long that took.
pub fn wait_group_gone(pgid: i32, within: Duration) -> Duration {
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(start.elapsed() < within, "process group {pgid} still has {:?}", group_members(pgid));
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Waits (async) until no live process remains in group `pgid` and `pids` are gone.
pub async fn wait_gone(pgid: i32, pids: &[i32], within: Duration) {
    let pids = pids.to_vec();
    crate::wait_for(within, &format!("process group {pgid} and pids {pids:?} to be gone"), || {
        let pids = pids.clone();
        async move { group_members(pgid).is_empty() && pids.iter().all(|p| !pid_alive(*p)) }
    })
    .await;
}

/// Live (non-zombie) processes whose environment says they belong to job `job` (every
/// step process carries `ROTA_JOB_ID`).
pub fn job_processes(job: impl std::fmt::Display) -> Vec<i32> {
    let needle = format!("ROTA_JOB_ID={job}");
    procfs::all_processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.is_zombie() && procfs::environ(p.pid).is_some_and(|env| env.contains(&needle)))
        .map(|p| p.pid)
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
    procfs::children_of(worker)
        .into_iter()
        .filter(|c| procfs::cmdline(c.pid).is_some_and(|argv| argv.iter().any(|a| a == "__spawner")))
        .map(|c| c.pid)
        .collect()
}

/// `kill -SIG PID`; asserts it succeeded.
pub fn kill(sig: &str, pid: i32) {
    let ok =
        Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}
