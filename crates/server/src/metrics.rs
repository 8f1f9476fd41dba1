//! Counters served at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters since start.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) jobs_submitted: AtomicU64,
    pub(crate) attempts_claimed: AtomicU64,
    pub(crate) attempts_handed_at_submit: AtomicU64,
    pub(crate) attempts_completed: AtomicU64,
    pub(crate) attempts_lost: AtomicU64,
    pub(crate) log_bytes: AtomicU64,
    pub(crate) bus_missed: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let rows = [
            ("rota_jobs_submitted_total", "Jobs accepted by submit.", &self.jobs_submitted),
            ("rota_attempts_claimed_total", "Attempts handed to workers.", &self.attempts_claimed),
            (
                "rota_attempts_handed_at_submit_total",
                "Attempts claimed inside the submit that created them, for a waiting worker.",
                &self.attempts_handed_at_submit,
            ),
            ("rota_attempts_completed_total", "Attempt results recorded.", &self.attempts_completed),
            ("rota_attempts_lost_total", "Attempts marked lost.", &self.attempts_lost),
            ("rota_log_bytes_total", "Log bytes received.", &self.log_bytes),
            (
                "rota_bus_missed_total",
                "Times this server found it had missed bus messages (it then looked again at everything).",
                &self.bus_missed,
            ),
        ];
        for (name, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// The total log quota's use (gauges, and counters since start).
    pub(crate) fn render_log_usage(u: &rota_store::LogUsage) -> String {
        let mut out = String::new();
        let mut row = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        row(
            "rota_log_live_bytes",
            "gauge",
            "Log bytes stored now (live bytes, not file size).",
            u.live_bytes,
        );
        if let Some(q) = u.quota_bytes {
            row("rota_log_quota_bytes", "gauge", "Total log quota.", q);
        }
        row(
            "rota_log_quota_pruned_bytes_total",
            "counter",
            "Bytes of finished jobs' logs deleted to keep the log quota.",
            u.pruned_bytes,
        );
        row(
            "rota_log_quota_refused_bytes_total",
            "counter",
            "Bytes of new output refused because the log quota was full.",
            u.refused_bytes,
        );
        out
    }
}
