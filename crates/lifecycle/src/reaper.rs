//! The supervisor's subreaper duties: orphans of the worker (steps, their children,
//! anything a step daemonized) are re-parented to the supervisor; once the worker is gone
//! their process groups are killed and they are reaped. Only our own children are ever
//! signalled: a child's pid cannot be reused before we reap it.

use super::procs;
use rustix::process::{Pid, Signal, WaitOptions};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Signals our unreaped child `pid`.
pub fn signal_child(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Reaps zombie children other than `worker` (tokio reaps the worker itself).
pub fn reap_adopted(me: i32, worker: i32) {
    for c in procs::children_of(me) {
        if c.pid != worker
            && c.is_zombie()
            && let Some(p) = Pid::from_raw(c.pid)
        {
            let _ = rustix::process::waitpid(Some(p), WaitOptions::NOHANG);
        }
    }
}

/// Kills the process group of every child left (the worker is gone, so they are its
/// orphans) and reaps them; gives up after 3 s. Blocks briefly by design: nothing else
/// should happen before they are gone.
pub fn kill_leftovers(me: i32) {
    let my_pgid = rustix::process::getpgrp().as_raw_nonzero().get();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = BTreeSet::new();
    loop {
        reap_adopted(me, 0);
        let live: Vec<procs::Stat> = procs::children_of(me).into_iter().filter(|c| !c.is_zombie()).collect();
        if live.is_empty() || Instant::now() >= deadline {
            break;
        }
        for c in live {
            // Our own group (the supervisor's) is never signalled as a whole.
            let res = match Pid::from_raw(c.pgid).filter(|_| c.pgid > 1 && c.pgid != my_pgid) {
                Some(group) => rustix::process::kill_process_group(group, Signal::KILL),
                None => match Pid::from_raw(c.pid) {
                    Some(p) => rustix::process::kill_process(p, Signal::KILL),
                    None => continue,
                },
            };
            if res.is_ok() {
                killed.insert(c.pgid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !killed.is_empty() {
        tracing::warn!(groups = ?killed, "killed process groups the worker left behind");
    }
}
