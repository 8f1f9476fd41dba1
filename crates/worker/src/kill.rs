//! Signalling a step's process group: TERM (or a chosen signal), a grace period, then
//! KILL. It only signals the group ids it is handed; deciding which groups are ours is the
//! executor's (live children) and `pgid.rs`'s (records at boot) job.

use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::time::Instant;

/// The leader of a group being stopped: something whose exit can be awaited (a step
/// reported by the spawner, or a direct child in tests).
pub(crate) trait Leader {
    /// Waits for the leader's exit status (cancel-safe, repeatable).
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send;
}

impl Leader for crate::spawner::StepExit {
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send {
        crate::spawner::StepExit::wait(self)
    }
}

#[cfg(test)]
impl Leader for tokio::process::Child {
    fn wait(&mut self) -> impl Future<Output = std::io::Result<ExitStatus>> + Send {
        tokio::process::Child::wait(self)
    }
}

/// Sends `sig` to every process of group `pgid`. Returns false when the group is gone.
pub(crate) fn signal_group(pgid: Pid, sig: Signal) -> bool {
    match kill_process_group(pgid, sig) {
        Ok(()) => true,
        Err(Errno::SRCH) => false,
        Err(e) => {
            tracing::warn!(
                pgid = pgid.as_raw_nonzero().get(),
                signal = sig.as_raw(),
                "cannot signal process group: {e}"
            );
            false
        }
    }
}

/// KILLs every process of group `pgid` (nothing happens if it is gone).
pub(crate) fn kill_group(pgid: Pid) -> bool {
    signal_group(pgid, Signal::KILL)
}

/// True while any process (zombies included) is in group `pgid`.
pub(crate) fn is_group_alive(pgid: Pid) -> bool {
    !matches!(test_kill_process_group(pgid), Err(Errno::SRCH))
}

/// Waits until group `pgid` is empty or `deadline` passes; true if it emptied.
pub(crate) async fn wait_group_gone(pgid: Pid, deadline: Instant) -> bool {
    let mut nap = Duration::from_millis(5);
    loop {
        if !is_group_alive(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(nap.min(deadline - now)).await;
        nap = (nap * 2).min(Duration::from_millis(100));
    }
}

/// The signal a stop order asks for (TERM unless a valid one is named).
pub(crate) fn signal_from_raw(raw: Option<i32>) -> Signal {
    match raw.and_then(Signal::from_named_raw) {
        Some(sig) => sig,
        None => {
            if let Some(n) = raw {
                tracing::warn!(signal = n, "unknown signal in stop order; sending TERM");
            }
            Signal::TERM
        }
    }
}

/// Stops group `pgid`, led by `child`: `first` to the group, then up to `grace` for the
/// whole group to exit, then KILL to whatever is left. If `hurry` completes first, KILL
/// at once. Returns the leader's exit status.
pub(crate) async fn terminate_group(
    pgid: Pid,
    first: Signal,
    grace: Duration,
    child: &mut impl Leader,
    hurry: impl Future<Output = ()>,
) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    signal_group(pgid, first);
    tokio::pin!(hurry);
    let status = tokio::select! {
        status = child.wait() => Some(status?),
        () = tokio::time::sleep_until(deadline) => None,
        () = &mut hurry => None,
    };
    let status = match status {
        Some(status) => {
            // The leader is reaped; its group may still hold children that ignore `first`.
            tokio::select! {
                _ = wait_group_gone(pgid, deadline) => {}
                () = &mut hurry => {}
            }
            status
        }
        None => {
            kill_group(pgid);
            child.wait().await?
        }
    };
    kill_group(pgid);
    Ok(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::procfs::live_group_members;
    use tokio::process::{Child, Command};

    fn spawn_group(script: &str) -> (Child, Pid) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id().unwrap() as i32).unwrap();
        (child, pid)
    }

    /// Bound for things that take milliseconds on an idle machine (a fork, an exit), generous
    /// for a loaded 2-core CI machine.
    const BOUND: Duration = Duration::from_secs(20);

    async fn wait_for_members(pgid: Pid, n: usize) {
        let deadline = std::time::Instant::now() + BOUND;
        while live_group_members(pgid.as_raw_nonzero().get()).len() < n {
            assert!(std::time::Instant::now() < deadline, "group {pgid:?} never had {n} members");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// KILL is asynchronous: a killed process may still be running its exit for a moment
    /// after `kill(2)` returns, so the group is checked until it empties, within a bound.
    async fn assert_group_dies(pgid: Pid) {
        let raw = pgid.as_raw_nonzero().get();
        let deadline = std::time::Instant::now() + BOUND;
        while !live_group_members(raw).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "processes left in the group: {:?}",
                live_group_members(raw)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn term_kills_a_group_with_a_background_child() {
        let (mut child, pgid) = spawn_group("sleep 300 & sleep 300");
        wait_for_members(pgid, 2).await;
        let status =
            terminate_group(pgid, Signal::TERM, Duration::from_secs(5), &mut child, std::future::pending())
                .await
                .unwrap();
        assert!(status.code().is_none(), "sh died of a signal: {status:?}");
        assert_group_dies(pgid).await;
    }

    #[tokio::test]
    async fn kill_follows_the_grace_when_term_is_ignored() {
        let (mut child, pgid) = spawn_group("trap '' TERM; sleep 300 & trap '' TERM; sleep 300; sleep 300");
        wait_for_members(pgid, 3).await;
        let grace = Duration::from_millis(300);
        let started = std::time::Instant::now();
        terminate_group(pgid, Signal::TERM, grace, &mut child, std::future::pending()).await.unwrap();
        assert!(started.elapsed() >= grace);
        // Without the KILL it would take 300 s; the bound only has to tell the two apart.
        assert!(started.elapsed() < grace + BOUND, "{:?}", started.elapsed());
        assert_group_dies(pgid).await;
    }

    #[tokio::test]
    async fn hurry_skips_the_rest_of_the_grace() {
        let (mut child, pgid) = spawn_group("trap '' TERM; sleep 300; sleep 300");
        wait_for_members(pgid, 2).await;
        let started = std::time::Instant::now();
        let hurry = tokio::time::sleep(Duration::from_millis(200));
        terminate_group(pgid, Signal::TERM, Duration::from_secs(60), &mut child, hurry).await.unwrap();
        // Well under the 60 s grace it would otherwise wait.
        assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
        assert_group_dies(pgid).await;
    }

    #[test]
    fn signals_from_orders() {
        assert_eq!(signal_from_raw(None), Signal::TERM);
        assert_eq!(signal_from_raw(Some(9)), Signal::KILL);
        assert_eq!(signal_from_raw(Some(2)), Signal::INT);
        assert_eq!(signal_from_raw(Some(12345)), Signal::TERM);
    }
}
