//! The table of attempts this worker holds: running ones (with their stop channel and
//! process group) and finished ones whose result is not delivered yet. Heartbeats list
//! it, stop orders and the watchdogs act through it. It never spawns or waits for
//! processes; the only signal it sends is the self-fencing KILL, under its lock.

use crate::kill;
use rota_domain::AttemptId;
use rustix::process::{Pid, Signal};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why an executor must stop its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// The server says the attempt is no longer ours: KILL now, report lost.
    NotHeld,
    /// Cancelled, revoked or past the deadline: this signal, grace, KILL; report cancelled.
    Cancel(Signal),
    /// The lease could not be renewed in time: KILL now, report lost.
    Fence,
    /// Over its memory limit: KILL now, report memory.
    Memory,
    /// Hard end of a warm shutdown, or a soft shutdown: TERM, grace, KILL; report lost.
    Shutdown,
    /// A hard shutdown: KILL now, report lost.
    HardShutdown,
    /// The session is gone: KILL now, report nothing (the new session does not hold it).
    Superseded,
}

/// The running part of a held attempt.
#[derive(Debug)]
pub(crate) struct Running {
    stop: mpsc::UnboundedSender<StopKind>,
    pgid: Option<Pid>,
    memory_limit: Option<u64>,
    fenced: bool,
}

#[derive(Debug)]
struct Held {
    /// When the last request that renewed (or granted) the lease was sent.
    lease_sent: Instant,
    running: Option<Running>,
}

/// What happened to a stop request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopResult {
    /// The executor was told.
    Stopping,
    /// The step already ended; its result is on its way.
    AlreadyFinished,
    /// Not an attempt of this worker.
    Unknown,
}

/// The held attempts.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    map: Mutex<HashMap<AttemptId, Held>>,
}

impl Attempts {
    fn lock(&self) -> MutexGuard<'_, HashMap<AttemptId, Held>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a claimed attempt; returns the receiver of its stop requests.
    pub(crate) fn insert(
        &self,
        id: AttemptId,
        lease_sent: Instant,
        memory_limit: Option<u64>,
    ) -> mpsc::UnboundedReceiver<StopKind> {
        let (tx, rx) = mpsc::unbounded_channel();
        let running = Running { stop: tx, pgid: None, memory_limit, fenced: false };
        let held = Held { lease_sent, running: Some(running) };
        self.lock().insert(id, held);
        rx
    }

    /// Every held attempt (for heartbeats).
    pub(crate) fn ids(&self) -> Vec<AttemptId> {
        self.lock().keys().copied().collect()
    }

    /// Attempts whose step still runs.
    pub(crate) fn running_count(&self) -> usize {
        self.lock().values().filter(|h| h.running.is_some()).count()
    }

    /// A heartbeat sent at `sent` renewed these leases.
    pub(crate) fn renew(&self, ids: &[AttemptId], sent: Instant) {
        let mut map = self.lock();
        for id in ids {
            if let Some(h) = map.get_mut(id) {
                h.lease_sent = h.lease_sent.max(sent);
            }
        }
    }

    /// Records (or clears, once the group is gone) the process group of a running step.
    pub(crate) fn set_pgid(&self, id: AttemptId, pgid: Option<Pid>) {
        if let Some(r) = self.lock().get_mut(&id).and_then(|h| h.running.as_mut()) {
            r.pgid = pgid;
        }
    }

    /// The pid (= process group) of a running step, if it has one.
    pub(crate) fn pid_of(&self, id: AttemptId) -> Option<u32> {
        let map = self.lock();
        let pgid = map.get(&id)?.running.as_ref()?.pgid?;
        u32::try_from(pgid.as_raw_nonzero().get()).ok()
    }

    /// The step ended; the attempt stays held until its result is delivered.
    pub(crate) fn finished(&self, id: AttemptId) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.running = None;
        }
    }

    /// The result was delivered (or will never be): forget the attempt.
    pub(crate) fn remove(&self, id: AttemptId) {
        self.lock().remove(&id);
    }

    /// Asks the executor of `id` to stop.
    pub(crate) fn stop(&self, id: AttemptId, kind: StopKind) -> StopResult {
        match self.lock().get(&id) {
            Some(Held { running: Some(r), .. }) => {
                let _ = r.stop.send(kind);
                StopResult::Stopping
            }
            Some(_) => StopResult::AlreadyFinished,
            None => StopResult::Unknown,
        }
    }

    /// Asks every running executor to stop; returns how many were asked.
    pub(crate) fn stop_all(&self, kind: StopKind) -> usize {
        let map = self.lock();
        let mut n = 0;
        for r in map.values().filter_map(|h| h.running.as_ref()) {
            let _ = r.stop.send(kind);
            n += 1;
        }
        n
    }

    /// KILLs every running step's group at once (the worker is being dropped and cannot
    /// wait for a grace); returns how many groups were signalled.
    pub(crate) fn kill_all_now(&self) -> usize {
        let map = self.lock();
        map.values().filter_map(|h| h.running.as_ref()?.pgid).filter(|pgid| kill::kill_group(*pgid)).count()
    }

    /// Forgets every attempt that no longer runs (their session is gone).
    pub(crate) fn forget_finished(&self) {
        self.lock().retain(|_, h| h.running.is_some());
    }

    /// Self-fencing: every running attempt whose lease was last renewed by a request sent
    /// more than `budget` before `now` is KILLed at once and its executor told. Returns
    /// the attempts fenced by this call.
    pub(crate) fn fence_overdue(&self, now: Instant, budget: Duration) -> Vec<AttemptId> {
        let mut map = self.lock();
        let mut fenced = Vec::new();
        for (id, h) in map.iter_mut() {
            let Some(r) = h.running.as_mut() else { continue };
            if r.fenced || now <= h.lease_sent + budget {
                continue;
            }
            // The reason first, then the signal: the executor that sees its step die of
            // this KILL finds why queued, and records `lost`, never a signal death.
            r.fenced = true;
            let _ = r.stop.send(StopKind::Fence);
            if let Some(pgid) = r.pgid {
                kill::kill_group(pgid);
            }
            fenced.push(*id);
        }
        fenced
    }

    /// Running attempts with a memory limit and a known process group.
    pub(crate) fn memory_limited(&self) -> Vec<(AttemptId, Pid, u64)> {
        self.lock()
            .iter()
            .filter_map(|(id, h)| {
                let r = h.running.as_ref()?;
                Some((*id, r.pgid?, r.memory_limit?))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overdue_leases_are_fenced_once_and_renewals_postpone_it() {
        let t = Attempts::default();
        let start = Instant::now();
        let mut rx_old = t.insert(AttemptId(1), start, None);
        let mut rx_new = t.insert(AttemptId(2), start, None);
        t.renew(&[AttemptId(2)], start + Duration::from_secs(5));
        let budget = Duration::from_secs(8);
        assert!(t.fence_overdue(start + Duration::from_secs(7), budget).is_empty());
        assert_eq!(t.fence_overdue(start + Duration::from_secs(9), budget), [AttemptId(1)]);
        assert_eq!(rx_old.try_recv().unwrap(), StopKind::Fence);
        assert!(t.fence_overdue(start + Duration::from_secs(10), budget).is_empty(), "only once");
        assert!(rx_new.try_recv().is_err());
        // A finished attempt awaiting delivery is never fenced.
        t.finished(AttemptId(2));
        assert!(t.fence_overdue(start + Duration::from_secs(60), budget).is_empty());
        assert_eq!(t.stop(AttemptId(2), StopKind::NotHeld), StopResult::AlreadyFinished);
        assert_eq!(t.stop(AttemptId(3), StopKind::NotHeld), StopResult::Unknown);
        assert_eq!(t.ids().len(), 2);
        t.forget_finished();
        assert_eq!(t.ids(), [AttemptId(1)]);
    }
}
