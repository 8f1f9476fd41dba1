//! The fleet's supervisors as this server last heard of them: the latest report per host
//! and instance key (the cached snapshot detection reads; no subprocess, no fan-out), and
//! the heals waiting to be handed to a linked supervisor. Reports and heal commands reach
//! every server of a control plane through the bus, so any server can list and heal
//! whichever server a supervisor links to. It owns that cache only; deciding what to heal
//! is `routes/supervisors.rs`'s.

use rota_api_types::supervisors::SupervisorReport;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// How often a linked supervisor reports when nothing changes.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(3);

/// A supervisor not heard from for this long is `stale`.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10);

/// Supervisors not heard from for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// (host, key).
pub(crate) type SupervisorKey = (String, String);

struct Entry {
    report: SupervisorReport,
    heard: Instant,
    /// A heal to hand over on the supervisor's next link call.
    pending: Option<Uuid>,
}

/// The cache, and a counter bumped on every change (link long-polls and heal waiters
/// watch it).
pub(crate) struct Supervisors {
    entries: Mutex<HashMap<SupervisorKey, Entry>>,
    changed: watch::Sender<u64>,
}

impl Default for Supervisors {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()), changed: watch::channel(0).0 }
    }
}

impl Supervisors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SupervisorKey, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Watches for changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records a report (from a link call here, or from the bus).
    pub(crate) fn report(&self, report: SupervisorReport) {
        let key = (report.host.clone(), report.key.clone());
        let mut entries = self.lock();
        entries.retain(|_, e| e.heard.elapsed() < FORGET_AFTER);
        let pending = entries.get(&key).and_then(|e| e.pending);
        // A supervisor that reports progress of the pending heal has taken it.
        let pending = pending.filter(|id| report.heal.as_ref().is_none_or(|h| h.id != *id));
        entries.insert(key, Entry { report, heard: Instant::now(), pending });
        drop(entries);
        self.bump();
    }

    /// Queues a heal for `key` (from the heal route here, or from the bus).
    pub(crate) fn queue_heal(&self, key: &SupervisorKey, id: Uuid) {
        if let Some(e) = self.lock().get_mut(key) {
            e.pending = Some(id);
        }
        self.bump();
    }

    /// The heal waiting for `key`, if any (handed over; it stays pending until the
    /// supervisor reports it, so a lost answer is handed over again).
    pub(crate) fn pending_heal(&self, key: &SupervisorKey) -> Option<Uuid> {
        self.lock().get(key).and_then(|e| e.pending)
    }

    /// Every supervisor: its last report and how long ago it came.
    pub(crate) fn snapshot(&self) -> Vec<(SupervisorReport, Duration)> {
        let mut all: Vec<_> = self.lock().values().map(|e| (e.report.clone(), e.heard.elapsed())).collect();
        all.sort_by(|a, b| (&a.0.host, &a.0.key).cmp(&(&b.0.host, &b.0.key)));
        all
    }

    /// One supervisor's last report.
    pub(crate) fn get(&self, key: &SupervisorKey) -> Option<(SupervisorReport, Duration)> {
        self.lock().get(key).map(|e| (e.report.clone(), e.heard.elapsed()))
    }
}
