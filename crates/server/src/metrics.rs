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
}
