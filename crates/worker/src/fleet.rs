//! A worker's fleet-control state: what `inspect` and `stats` report (steps in flight,
//! counters, uptime), the revokes it holds, the concurrency in force (autoscaling) and the
//! recycling budget (`--max-jobs`, `--max-memory`), and the settings in force ([`Tuning`]:
//! the worker's own, or a declared pool's laid over them, changed live by `pool.rs`). It
//! answers questions and keeps numbers; it never claims, spawns or signals anything itself.

use crate::config::WorkerConfig;
use crate::shutdown::ShutdownHandle;
use rota_api_types::fleet::{InFlight, WorkerStats};
use rota_api_types::worker::ClaimedStep;
use rota_domain::{AttemptId, AttemptOutcome, JobId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

struct Entry {
    job_id: JobId,
    step: String,
    attempt: u32,
    queue: Option<String>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The settings a running worker can change without restarting: its own at start, a
/// declared pool's once one applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Autoscale MIN (the fixed concurrency twice without autoscaling).
    pub(crate) min: u32,
    /// Autoscale MAX.
    pub(crate) max: u32,
    /// Slots added per step up.
    pub(crate) scale_up_step: u32,
    /// Slots removed per step down.
    pub(crate) scale_down_step: u32,
    /// Idle time before scaling down.
    pub(crate) idle_period: Duration,
    /// Least time between two changes.
    pub(crate) cooldown: Duration,
    /// `--max-jobs`.
    pub(crate) max_jobs: Option<u64>,
    /// `--max-memory`.
    pub(crate) max_memory: Option<u64>,
    /// How long a warm stop lets running steps finish.
    pub(crate) drain_timeout: Duration,
    /// The queues the session claims from.
    pub(crate) queues: Vec<String>,
    /// The pool in force and its generation applied.
    pub(crate) pool: Option<(String, i64)>,
}

impl Tuning {
    /// The worker's own settings.
    pub(crate) fn of(config: &WorkerConfig) -> Self {
        let (min, max) = config.concurrency_bounds();
        Self {
            min,
            max,
            scale_up_step: config.scale_up_step,
            scale_down_step: config.scale_down_step,
            idle_period: config.idle_period,
            cooldown: config.cooldown,
            max_jobs: config.max_jobs,
            max_memory: config.max_memory,
            drain_timeout: config.drain_timeout,
            queues: config.queues.clone(),
            pool: None,
        }
    }
}

/// Shared by the claim loop, executors, control and the autoscaler.
pub(crate) struct FleetState {
    started: Instant,
    tuning: Mutex<Tuning>,
    /// The claim loop's slots: as many permits as the largest MAX so far (a lower
    /// concurrency fills fewer, `claimable`).
    slots: Arc<Semaphore>,
    capacity: AtomicU32,
    /// Claims nothing while true (worker configs being applied, or a setup failed); the
    /// claim loop also drops a long-poll in flight when it turns true.
    held: tokio::sync::watch::Sender<bool>,
    active: AtomicU32,
    processed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    claimed: AtomicU64,
    /// Slots of finished steps kept for the claim their results carry (`handover.rs`):
    /// busy for the claim loop until they hold a new step or are freed.
    handed: AtomicU32,
    /// Slots the claim loop's request in flight asks for.
    claiming: AtomicU32,
    in_flight: Mutex<HashMap<AttemptId, Entry>>,
    /// Revoked jobs, with when each revoke expires (by this process's clock).
    revoked: Mutex<HashMap<JobId, Option<Instant>>>,
    last_busy: Mutex<Instant>,
    last_change: Mutex<Instant>,
    recycle: Mutex<Option<String>>,
    shutdown: Mutex<Option<ShutdownHandle>>,
    /// Woken when a slot frees up or the concurrency changes.
    pub(crate) changed: Notify,
}

impl std::fmt::Debug for FleetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetState").field("active", &self.active).field("claimed", &self.claimed).finish()
    }
}

impl FleetState {
    pub(crate) fn new(config: &WorkerConfig) -> Self {
        let tuning = Tuning::of(config);
        let (min, max) = (tuning.min, tuning.max);
        let now = Instant::now();
        Self {
            started: now,
            tuning: Mutex::new(tuning),
            slots: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX))),
            capacity: AtomicU32::new(max),
            held: tokio::sync::watch::Sender::new(false),
            active: AtomicU32::new(min),
            processed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            handed: AtomicU32::new(0),
            claiming: AtomicU32::new(0),
            in_flight: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
            last_busy: Mutex::new(now),
            last_change: Mutex::new(now),
            recycle: Mutex::new(None),
            shutdown: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    /// Slots the claim loop may fill now: the concurrency in force minus steps in flight
    /// and slots handed to results' claims, capped by what is left of the `--max-jobs`
    /// budget.
    pub(crate) fn claimable(&self) -> u32 {
        self.fillable(self.handed.load(Ordering::SeqCst), 0)
    }

    /// How many of `mine` slots handed over by finished steps the claim their results
    /// carry may fill: as many as the claim loop could fill for them, with the other
    /// handed slots and a claim loop's request in flight counted as busy. Never more
    /// than `mine`: that claim only refills slots it frees.
    pub(crate) fn refillable(&self, mine: u32) -> u32 {
        let others = self.handed.load(Ordering::SeqCst).saturating_sub(mine);
        self.fillable(others, self.claiming.load(Ordering::SeqCst)).min(mine)
    }

    /// Free slots under the concurrency in force and the `--max-jobs` budget, `busy`
    /// slots besides the steps in flight, `asked` of them claimed by a request in flight.
    fn fillable(&self, busy: u32, asked: u32) -> u32 {
        if *self.held.borrow() {
            return 0;
        }
        let running = (lock(&self.in_flight).len() as u32).saturating_add(busy).saturating_add(asked);
        let mut free = self.active.load(Ordering::Relaxed).saturating_sub(running);
        if let Some(n) = lock(&self.tuning).max_jobs {
            let left =
                n.saturating_sub(self.claimed.load(Ordering::Relaxed)).saturating_sub(u64::from(asked));
            free = free.min(u32::try_from(left).unwrap_or(u32::MAX));
        }
        free
    }

    /// The claim loop asks for `n` slots (0: its request settled, what it got is in
    /// flight). Seen by [`FleetState::refillable`].
    pub(crate) fn set_claiming(&self, n: u32) {
        self.claiming.store(n, Ordering::SeqCst);
    }

    /// A finished step's slot is kept for its result's claim: counted busy before the step
    /// leaves the steps in flight, so no claim sees the slot free meanwhile.
    pub(crate) fn hand_over(&self, id: AttemptId, outcome: Option<&AttemptOutcome>) {
        self.handed.fetch_add(1, Ordering::SeqCst);
        self.finished(id, outcome);
    }

    /// A handed-over slot holds a new step (counted in flight already) or is free again.
    pub(crate) fn handed_back(&self) {
        let _ = self.handed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.changed.notify_waiters();
    }

    /// The slots the claim loop takes permits from.
    pub(crate) fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    /// The most slots the worker can use now (the semaphore's size).
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Holds claims (`true`) or lets them go on.
    pub(crate) fn hold(&self, held: bool) {
        self.held.send_replace(held);
        self.changed.notify_waiters();
    }

    /// Watches the hold (the claim loop drops its long-poll when it turns on).
    pub(crate) fn held(&self) -> tokio::sync::watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// The settings in force.
    pub(crate) fn tuning(&self) -> Tuning {
        lock(&self.tuning).clone()
    }

    /// Puts `next` in force at once: the concurrency moves into the new bounds (a fixed
    /// one to its value), the slots grow if MAX grew, and the claim loop is woken.
    pub(crate) fn retune(&self, next: Tuning) {
        let mut t = lock(&self.tuning);
        let active = self.active();
        let to = if next.min == next.max { next.min } else { active.clamp(next.min, next.max) };
        self.active.store(to, Ordering::Relaxed);
        let cap = self.capacity();
        if next.max > cap {
            self.slots.add_permits(usize::try_from(next.max - cap).unwrap_or(0));
            self.capacity.store(next.max, Ordering::Relaxed);
        }
        if active != to {
            tracing::info!(from = active, to, "concurrency changed by the pool in force");
        }
        *t = next;
        drop(t);
        self.changed.notify_waiters();
    }

    /// Concurrency in force now.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// True once `--max-jobs` steps have been claimed.
    pub(crate) fn budget_spent(&self) -> bool {
        lock(&self.tuning).max_jobs.is_some_and(|n| self.claimed.load(Ordering::Relaxed) >= n)
    }

    pub(crate) fn claimed(&self, step: &ClaimedStep, queue: Option<String>) {
        self.claimed.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_busy) = Instant::now();
        lock(&self.in_flight).insert(
            step.attempt_id,
            Entry {
                job_id: step.job_id,
                step: step.step.clone(),
                attempt: step.attempt,
                queue,
                started: Instant::now(),
            },
        );
    }

    /// An attempt ended (`None`: superseded, nothing to count).
    pub(crate) fn finished(&self, id: AttemptId, outcome: Option<&AttemptOutcome>) {
        lock(&self.in_flight).remove(&id);
        *lock(&self.last_busy) = Instant::now();
        if let Some(o) = outcome {
            self.processed.fetch_add(1, Ordering::Relaxed);
            let counter = if matches!(o, AttemptOutcome::Succeeded) { &self.succeeded } else { &self.failed };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn in_flight_count(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// `inspect`: steps in flight, with the pid looked up by `pid_of`.
    pub(crate) fn inspect(&self, pid_of: impl Fn(AttemptId) -> Option<u32>) -> Vec<InFlight> {
        let mut v: Vec<InFlight> = lock(&self.in_flight)
            .iter()
            .map(|(id, e)| InFlight {
                job_id: e.job_id,
                step: e.step.clone(),
                attempt: e.attempt,
                attempt_id: *id,
                pid: pid_of(*id),
                running_ms: u64::try_from(e.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                queue: e.queue.clone(),
            })
            .collect();
        v.sort_by_key(|f| f.attempt_id);
        v
    }

    pub(crate) fn stats(&self) -> WorkerStats {
        let t = self.tuning();
        WorkerStats {
            max_concurrency: t.max,
            min_concurrency: t.min,
            active_concurrency: self.active(),
            in_flight: self.in_flight_count() as u32,
            processed: self.processed.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            uptime_s: self.started.elapsed().as_secs_f64(),
            rss_bytes: own_rss(),
            queues: t.queues,
            pool: t.pool.as_ref().map(|p| p.0.clone()),
            pool_generation: t.pool.as_ref().map(|p| p.1),
            configs: Vec::new(),
            degraded: None,
        }
    }

    /// Holds revokes; `expires_in` says when each is forgotten (as the server forgets it).
    pub(crate) fn hold_revokes(&self, jobs: &[JobId], expires_in: impl Fn(JobId) -> Option<Duration>) {
        let now = Instant::now();
        let mut held = lock(&self.revoked);
        for id in jobs {
            held.insert(*id, expires_in(*id).map(|d| now + d));
        }
    }

    /// Revokes in force; expired ones are dropped here.
    pub(crate) fn revoked(&self) -> Vec<JobId> {
        let now = Instant::now();
        let mut held = lock(&self.revoked);
        held.retain(|_, until| until.is_none_or(|t| t > now));
        let mut v: Vec<JobId> = held.keys().copied().collect();
        v.sort();
        v
    }

    pub(crate) fn set_shutdown(&self, handle: ShutdownHandle) {
        *lock(&self.shutdown) = Some(handle);
    }

    pub(crate) fn shutdown_handle(&self) -> Option<ShutdownHandle> {
        lock(&self.shutdown).clone()
    }

    /// Asks the worker to drain and exit to be replaced, once.
    pub(crate) fn request_recycle(&self, why: String) {
        let mut r = lock(&self.recycle);
        if r.is_none() {
            tracing::info!(reason = %why, "recycling: draining, then exiting to be replaced");
            *r = Some(why);
            if let Some(h) = self.shutdown_handle() {
                h.request(crate::ShutdownMode::Warm);
            }
        }
    }

    pub(crate) fn recycle_reason(&self) -> Option<String> {
        lock(&self.recycle).clone()
    }

    /// One autoscaling decision. Up by a step when the last claim filled every free slot
    /// (the backlog is at least what the worker can take) and all slots are busy; down by
    /// a step once nothing ran for `idle_period`; never outside MIN..MAX, never more often
    /// than `cooldown`. Returns the new concurrency if it changed.
    pub(crate) fn autoscale(&self, backlog_full: bool) -> Option<u32> {
        let t = self.tuning();
        if t.min == t.max {
            return None;
        }
        let now = Instant::now();
        let mut last_change = lock(&self.last_change);
        if now.duration_since(*last_change) < t.cooldown {
            return None;
        }
        let active = self.active();
        let busy = self.in_flight_count() as u32;
        let idle_for = if busy > 0 { Duration::ZERO } else { now.duration_since(*lock(&self.last_busy)) };
        let next = if backlog_full && busy >= active && active < t.max {
            (active + t.scale_up_step).min(t.max)
        } else if idle_for >= t.idle_period && active > t.min {
            active.saturating_sub(t.scale_down_step).max(t.min)
        } else {
            return None;
        };
        self.active.store(next, Ordering::Relaxed);
        *last_change = now;
        drop(last_change);
        tracing::info!(from = active, to = next, "autoscale: concurrency changed");
        self.changed.notify_waiters();
        Some(next)
    }
}

/// Every 250 ms: scale down when idle, and start recycling once the `--max-jobs` budget is
/// spent and nothing runs, or the worker's RSS passed `--max-memory`.
pub(crate) async fn ticker(ctx: &crate::context::Ctx, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let f = &ctx.fleet;
        f.autoscale(false);
        let t = f.tuning();
        if f.budget_spent() && f.in_flight_count() == 0 {
            let n = t.max_jobs.unwrap_or(0);
            f.request_recycle(format!("ran its {n} jobs (--max-jobs)"));
        }
        if let Some(limit) = t.max_memory {
            let rss = own_rss();
            if rss > limit {
                f.request_recycle(format!("RSS {rss} bytes passed --max-memory {limit}"));
            }
        }
    }
}

/// Resident memory of this process.
pub(crate) fn own_rss() -> u64 {
    crate::procfs::rss_bytes(i32::try_from(std::process::id()).unwrap_or(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(autoscale: Option<(u32, u32)>) -> WorkerConfig {
        let mut c = WorkerConfig::new("127.0.0.1:1", "t", "/tmp/ws");
        c.autoscale = autoscale;
        c.cooldown = Duration::ZERO;
        c.idle_period = Duration::from_millis(50);
        c
    }

    fn step(id: i64) -> ClaimedStep {
        ClaimedStep {
            secret_env: Vec::new(),
            attempt_id: AttemptId(id),
            job_id: JobId::new(),
            step: "s".into(),
            attempt: 1,
            run: "true".into(),
            env: Default::default(),
            timeout_ms: None,
            memory_limit: None,
            keep_workspace: false,
            log_cap: 1,
            queue: None,
        }
    }

    #[test]
    fn scales_up_under_a_full_backlog_and_down_when_idle() {
        let c = config(Some((2, 8)));
        let f = FleetState::new(&c);
        assert_eq!((f.active(), f.capacity()), (2, 8));
        f.claimed(&step(1), None);
        f.claimed(&step(2), None);
        assert_eq!(f.autoscale(true), Some(4));
        assert_eq!(f.autoscale(false), None, "busy but the last claim did not fill the slots");
        for i in 3..=8 {
            f.claimed(&step(i), None);
        }
        assert_eq!(f.autoscale(true), Some(6));
        assert_eq!(f.autoscale(true), Some(8));
        assert_eq!(f.autoscale(true), None, "never above MAX");
        for i in 1..=8 {
            f.finished(AttemptId(i), Some(&AttemptOutcome::Succeeded));
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(f.autoscale(false), Some(6));
        assert_eq!(f.autoscale(false), Some(4));
        assert_eq!(f.autoscale(false), Some(2));
        assert_eq!(f.autoscale(false), None, "never below MIN");
        assert_eq!(f.stats().processed, 8);
    }

    #[test]
    fn handed_slots_are_busy_for_the_claim_loop_and_refilled_within_the_concurrency() {
        let mut c = config(None);
        c.concurrency = 2;
        c.max_jobs = Some(3);
        let f = FleetState::new(&c);
        f.claimed(&step(1), None);
        f.claimed(&step(2), None);
        f.hand_over(AttemptId(1), Some(&AttemptOutcome::Succeeded));
        assert_eq!(f.claimable(), 0, "a handed slot is not the claim loop's");
        assert_eq!(f.refillable(1), 1);
        f.set_claiming(1);
        assert_eq!(f.refillable(1), 0, "the claim loop's request in flight counts (budget)");
        f.set_claiming(0);
        f.hand_over(AttemptId(2), Some(&AttemptOutcome::Succeeded));
        assert_eq!(f.refillable(2), 1, "only one job of the budget is left");
        f.handed_back();
        f.handed_back();
        assert_eq!(f.claimable(), 1);
        f.retune(Tuning { min: 1, max: 1, ..f.tuning() });
        f.claimed(&step(3), None);
        f.hand_over(AttemptId(3), None);
        assert_eq!(f.refillable(1), 0, "the budget is spent");
        f.handed_back();
        let f = FleetState::new(&c);
        f.claimed(&step(1), None);
        f.claimed(&step(2), None);
        f.retune(Tuning { min: 1, max: 1, ..f.tuning() });
        f.hand_over(AttemptId(1), None);
        assert_eq!(f.refillable(1), 0, "a lowered concurrency is not refilled");
        f.hold(true);
        f.hand_over(AttemptId(2), None);
        assert_eq!(f.refillable(2), 0, "held claims");
    }

    #[test]
    fn max_jobs_caps_claims() {
        let mut c = config(None);
        c.concurrency = 4;
        c.max_jobs = Some(5);
        let f = FleetState::new(&c);
        assert_eq!(f.claimable(), 4);
        for i in 1..=4 {
            f.claimed(&step(i), None);
        }
        assert_eq!(f.claimable(), 0);
        f.finished(AttemptId(1), Some(&AttemptOutcome::Succeeded));
        f.finished(AttemptId(2), Some(&AttemptOutcome::Succeeded));
        assert_eq!(f.claimable(), 1, "only one job of the budget is left");
        f.claimed(&step(5), None);
        assert!(f.budget_spent());
        assert_eq!(f.claimable(), 0);
    }
}
