//! Self-fencing watchdog: every ~150 ms, KILL the group of any running attempt whose last
//! renewing request was sent more than `ttl - margin` ago, so a partitioned or frozen
//! worker never races its replacement. It reads `Instant::now()` on every wake-up (so it
//! fires right after a SIGSTOP/SIGCONT), and never renews anything itself.

use crate::context::Ctx;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(150);

/// Runs until `stop` is cancelled.
pub(crate) async fn watchdog(ctx: &Ctx, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        check(ctx, Instant::now());
    }
}

/// One check at `now`.
pub(crate) fn check(ctx: &Ctx, now: Instant) {
    let budget = ctx.lease().fence_budget();
    for id in ctx.attempts.fence_overdue(now, budget) {
        tracing::error!(attempt_id = %id, "self-fencing attempt {id}: lease not renewed");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attempts::StopKind;
    use crate::config::WorkerConfig;
    use crate::procfs::live_group_members;
    use rota_client::WorkerClient;
    use rota_domain::AttemptId;
    use rustix::process::Pid;

    #[test]
    fn spawner_helper() {
        crate::spawner::serve_if_test_helper();
    }

    #[tokio::test]
    async fn an_unrenewed_lease_kills_the_group_at_the_first_check_after_waking() {
        let mut config = WorkerConfig::new("127.0.0.1:1", "t", "/nonexistent");
        config.heartbeat_interval = Some(Duration::from_secs(2));
        config.lease_ttl = Some(Duration::from_secs(10));
        let spawner = crate::spawner::start_in_test_binary("fence::tests::spawner_helper").unwrap();
        let ctx = Ctx::new(config, WorkerClient::new("127.0.0.1:1").unwrap(), spawner);
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 300 & sleep 300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = Pid::from_raw(child.id().unwrap() as i32).unwrap();
        let sent = Instant::now();
        let mut stop_rx = ctx.attempts.insert(AttemptId(1), sent, None);
        ctx.attempts.set_pgid(AttemptId(1), Some(pgid));

        // Within the budget (10 s - min(2 s, 2.5 s) = 8 s): nothing happens.
        check(&ctx, sent + Duration::from_secs(7));
        assert!(stop_rx.try_recv().is_err());
        // As if the worker had been stopped (SIGSTOP) for a minute and just continued.
        check(&ctx, sent + Duration::from_secs(60));
        assert_eq!(stop_rx.try_recv().unwrap(), StopKind::Fence);
        let status = child.wait().await.unwrap();
        assert!(status.code().is_none(), "killed by a signal: {status:?}");
        // The leader is reaped; its background child may still be running its exit.
        let raw = pgid.as_raw_nonzero().get();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !live_group_members(raw).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "group {raw} survived self-fencing: {:?}",
                live_group_members(raw)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
