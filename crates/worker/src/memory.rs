//! Memory limits: once a second, for running attempts that have a `memory_limit`, sums
//! the resident memory of every live process in the step's group and stops the attempt
//! (KILL, outcome `memory`) when it is over. It only asks executors to stop.

use crate::attempts::StopKind;
use crate::context::Ctx;
use crate::procfs;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PERIOD: Duration = Duration::from_secs(1);

/// Runs until `stop` is cancelled.
pub(crate) async fn memory_watch(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            () = stop.cancelled() => return,
        }
        let limited = ctx.attempts.memory_limited();
        if limited.is_empty() {
            continue;
        }
        let groups: Vec<i32> = limited.iter().map(|(_, pgid, _)| pgid.as_raw_nonzero().get()).collect();
        let Ok(usage) = tokio::task::spawn_blocking(move || group_rss(&groups)).await else { continue };
        for (id, pgid, limit) in limited {
            let used = usage.get(&pgid.as_raw_nonzero().get()).copied().unwrap_or(0);
            if used > limit {
                tracing::warn!(attempt_id = %id, used, limit, "step exceeded its memory limit: killing its process group");
                ctx.attempts.stop(id, StopKind::Memory);
            }
        }
    }
}

/// Resident bytes per process group, for the given groups.
fn group_rss(groups: &[i32]) -> HashMap<i32, u64> {
    let mut out = HashMap::new();
    for p in procfs::all_processes().unwrap_or_default() {
        if !p.is_zombie() && groups.contains(&p.pgid) {
            *out.entry(p.pgid).or_insert(0) += procfs::rss_bytes(p.pid).unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn counts_the_resident_memory_of_a_whole_group() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 300 & sleep 300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        // Polled, not slept for: on a loaded machine `sh` may not have run yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let usage = loop {
            let usage = group_rss(&[pgid, -5]);
            if usage.get(&pgid).copied().unwrap_or(0) > 100 * 1024 || std::time::Instant::now() >= deadline {
                break usage;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(usage.get(&pgid).copied().unwrap_or(0) > 100 * 1024, "{usage:?}");
        assert!(!usage.contains_key(&-5));
        rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(pgid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        child.wait().unwrap();
    }
}
