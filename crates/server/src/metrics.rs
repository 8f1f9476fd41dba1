//! What `/metrics` serves, in the Prometheus text format: this server's counters,
//! histograms and gauges, recorded through the `metrics` facade into this server's own
//! `metrics-exporter-prometheus` recorder (never the process-global one: tests run several
//! servers in one process), plus the fleet-wide gauges of the leader's cached snapshot
//! (`fleet_gauges.rs`), the log quota's use and the process's own numbers.
//!
//! Per-worker gauges are dropped by the exporter's idle timeout ([`IDLE_TIMEOUT`]) once
//! nothing refreshes them, so a stopped worker's series disappear. Every series is listed in
//! the README. Must not query the store: a scrape reads memory only.

use metrics::{Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use rota_domain::AttemptOutcome;
use rota_store::ClaimedAttempt;
use std::time::Duration;

/// How long a gauge that nothing refreshes stays: a live worker's concurrency is refreshed
/// by each heartbeat (every 2 s by default), so three missed heartbeats' worth and more.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Histogram buckets, in seconds: from a fast claim (ms) to a long step (hours).
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    14400.0,
];

/// The histograms (the other series without `_total` are gauges).
const HISTOGRAMS: &[&str] =
    &["rota_submit_to_start_seconds", "rota_step_duration_seconds", "rota_claim_duration_seconds"];

/// How an attempt came to end lost (the `cause` label of `rota_attempts_lost_total`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum LostBy {
    /// Its lease expired (the sweeper).
    LeaseExpired,
    /// Its worker registered again (a restart): the old session's attempts.
    Superseded,
    /// Its worker unregistered while holding it (a shutdown that did not finish it).
    Unregistered,
    /// Its worker reported it lost (self-fencing, a hard shutdown, a spawn failure).
    Reported,
    /// An operator forgot its worker (`rota worker forget`).
    Forgotten,
}

impl LostBy {
    fn label(self) -> &'static str {
        match self {
            LostBy::LeaseExpired => "lease_expired",
            LostBy::Superseded => "superseded",
            LostBy::Unregistered => "unregistered",
            LostBy::Reported => "reported",
            LostBy::Forgotten => "forgotten",
        }
    }
}

/// A process's own numbers, read by whoever composes the server (the CLI reads `/proc`
/// through `rota_worker::procfs`, the workspace's one `/proc` reader).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
}

/// Reads this process's numbers at each scrape (`ServerConfig::process_probe`).
pub type ProcessProbe = fn() -> Option<ProcessSample>;

/// This server's recorder and what it was told.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(IDLE_TIMEOUT))
            .set_buckets(BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let m = Self { recorder, handle };
        m.describe();
        // Counters exist from the start at 0, so a rate has its first point and a reader
        // tells "none yet" from "not exported".
        for name in [
            "rota_jobs_submitted_total",
            "rota_attempts_claimed_total",
            "rota_attempts_handed_at_submit_total",
            "rota_attempts_claimed_at_completion_total",
            "rota_log_bytes_total",
            "rota_bus_missed_total",
        ] {
            m.counter(name, &[], 0);
        }
        for by in [LostBy::LeaseExpired, LostBy::Superseded, LostBy::Unregistered, LostBy::Reported] {
            m.attempts_lost(by, 0);
        }
        for status in
            rota_domain::AttemptStatus::ALL.iter().filter(|s| **s != rota_domain::AttemptStatus::Running)
        {
            m.counter("rota_attempts_completed_total", &[("outcome", status.as_str().to_string())], 0);
        }
        m
    }
}

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

fn key(name: &'static str, labels: &[(&'static str, String)]) -> metrics::Key {
    metrics::Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect::<Vec<_>>())
}

impl Metrics {
    fn counter(&self, name: &'static str, labels: &[(&'static str, String)], n: u64) {
        self.recorder.register_counter(&key(name, labels), &META).increment(n);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], v: f64) {
        self.recorder.register_gauge(&key(name, labels), &META).set(v);
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, String)], v: f64) {
        self.recorder.register_histogram(&key(name, labels), &META).record(v);
    }

    fn describe(&self) {
        use metrics::Unit;
        let rows: &[(&'static str, Unit, &'static str)] = &[
            (
                "rota_jobs_submitted_total",
                Unit::Count,
                "Jobs created by this server (submits, workflow runs, schedule fires).",
            ),
            ("rota_attempts_claimed_total", Unit::Count, "Attempts handed to workers by this server."),
            (
                "rota_attempts_handed_at_submit_total",
                Unit::Count,
                "Attempts claimed inside the submit that created them, for a waiting worker.",
            ),
            (
                "rota_attempts_claimed_at_completion_total",
                Unit::Count,
                "Attempts claimed with a worker's completion, for the slots it freed.",
            ),
            (
                "rota_attempts_completed_total",
                Unit::Count,
                "Attempt results workers reported to this server, by outcome.",
            ),
            (
                "rota_attempts_lost_total",
                Unit::Count,
                "Attempts that ended lost, by cause (lease_expired, superseded, unregistered, reported).",
            ),
            ("rota_log_bytes_total", Unit::Bytes, "Log bytes received by this server."),
            (
                "rota_bus_missed_total",
                Unit::Count,
                "Times this server found it had missed bus messages (it then looked again at everything).",
            ),
            (
                "rota_event_resyncs_total",
                Unit::Count,
                "resync events sent to event-stream clients, by reason (missed, stale_id, slow).",
            ),
            (
                "rota_submit_to_start_seconds",
                Unit::Seconds,
                "From a job's submit to the claim of a first attempt of one of its steps.",
            ),
            (
                "rota_step_duration_seconds",
                Unit::Seconds,
                "How long attempts ran, as their workers measured, by outcome.",
            ),
            ("rota_claim_duration_seconds", Unit::Seconds, "How long one claim took in the store."),
            (
                "rota_worker_active_concurrency",
                Unit::Count,
                "Concurrency in force per live worker heartbeating to this server (gone 15 s after its last heartbeat).",
            ),
            ("rota_build_info", Unit::Count, "Always 1; the labels say which rota this server is."),
            ("rota_log_live_bytes", Unit::Bytes, "Log bytes stored now (live bytes, not file size)."),
            ("rota_log_quota_bytes", Unit::Bytes, "Total log quota."),
            (
                "rota_log_quota_pruned_bytes_total",
                Unit::Bytes,
                "Bytes of finished jobs' logs deleted to keep the log quota.",
            ),
            (
                "rota_log_quota_refused_bytes_total",
                Unit::Bytes,
                "Bytes of new output refused because the log quota was full.",
            ),
            ("process_cpu_seconds_total", Unit::Seconds, "User and system CPU time of this server process."),
            ("process_resident_memory_bytes", Unit::Bytes, "Resident memory of this server process."),
            (
                "process_start_time_seconds",
                Unit::Seconds,
                "Start time of this server process since the Unix epoch.",
            ),
            ("process_open_fds", Unit::Count, "Open file descriptors of this server process."),
            ("process_threads", Unit::Count, "Threads of this server process."),
        ];
        for (name, unit, help) in rows {
            let k = metrics::KeyName::from_const_str(name);
            // Process numbers are read at scrape time and set: gauges, whatever their name.
            if name.ends_with("_total") && !name.starts_with("process_") {
                self.recorder.describe_counter(k, Some(*unit), (*help).into());
            } else if HISTOGRAMS.contains(name) {
                self.recorder.describe_histogram(k, Some(*unit), (*help).into());
            } else {
                self.recorder.describe_gauge(k, Some(*unit), (*help).into());
            }
        }
    }

    pub(crate) fn jobs_submitted(&self, n: u64) {
        self.counter("rota_jobs_submitted_total", &[], n);
    }

    /// Attempts a claim took; the first attempts' submit → start latency (a job id is a
    /// UUIDv7: its time is the submit's, on the server that took it).
    pub(crate) fn attempts_claimed(&self, got: &[ClaimedAttempt]) {
        self.counter("rota_attempts_claimed_total", &[], got.len() as u64);
        let now = chrono::Utc::now();
        for a in got.iter().filter(|a| a.number == 1) {
            if let Some(ts) = a.job_id.0.get_timestamp() {
                let (secs, nanos) = ts.to_unix();
                let submitted = chrono::DateTime::from_timestamp(secs as i64, nanos);
                if let Some(waited) = submitted.and_then(|s| now.signed_duration_since(s).to_std().ok()) {
                    self.histogram("rota_submit_to_start_seconds", &[], waited.as_secs_f64());
                }
            }
        }
    }

    pub(crate) fn handed_at_submit(&self, n: u64) {
        self.counter("rota_attempts_handed_at_submit_total", &[], n);
    }

    pub(crate) fn claimed_at_completion(&self, n: u64) {
        self.counter("rota_attempts_claimed_at_completion_total", &[], n);
    }

    pub(crate) fn claim_took(&self, d: Duration) {
        self.histogram("rota_claim_duration_seconds", &[], d.as_secs_f64());
    }

    /// A worker reported how an attempt ended: counted by outcome, its run time observed,
    /// and a reported loss counted as lost.
    pub(crate) fn attempt_ended(&self, namespace: &str, outcome: &AttemptOutcome, run_ms: Option<u64>) {
        let status = outcome.status().as_str().to_string();
        self.counter("rota_attempts_completed_total", &[("outcome", status.clone())], 1);
        if let Some(ms) = run_ms {
            self.histogram("rota_step_duration_seconds", &[("outcome", status)], ms as f64 / 1000.0);
        }
        if matches!(outcome, AttemptOutcome::Lost { .. }) {
            tracing::debug!(namespace, "attempt reported lost by its worker");
            self.attempts_lost(LostBy::Reported, 1);
        }
    }

    pub(crate) fn attempts_lost(&self, by: LostBy, n: usize) {
        self.counter("rota_attempts_lost_total", &[("cause", by.label().to_string())], n as u64);
    }

    pub(crate) fn log_bytes(&self, n: u64) {
        self.counter("rota_log_bytes_total", &[], n);
    }

    pub(crate) fn bus_missed(&self) {
        self.counter("rota_bus_missed_total", &[], 1);
    }

    /// A browser reported a Content-Security-Policy violation on a dashboard page.
    pub(crate) fn csp_violation(&self) {
        self.counter("rota_ui_csp_violations_total", &[], 1);
    }

    pub(crate) fn resync(&self, reason: &'static str) {
        self.counter("rota_event_resyncs_total", &[("reason", reason.to_string())], 1);
    }

    /// A worker heartbeat (or registration) says its concurrency in force.
    pub(crate) fn worker_concurrency(&self, namespace: &str, name: &str, concurrency: u32) {
        let labels = [("namespace", namespace.to_string()), ("worker", name.to_string())];
        self.gauge("rota_worker_active_concurrency", &labels, f64::from(concurrency));
    }

    /// A worker unregistered: its series is no longer refreshed, and the idle timeout
    /// removes it (the exporter has no removal).
    pub(crate) fn worker_gone(&self, namespace: &str, name: &str) {
        tracing::debug!(namespace, worker = name, "worker gone: its series end at the idle timeout");
    }

    /// Drains histogram buffers between scrapes, so memory stays bounded without scrapes.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The text of one scrape: everything recorded, with the values that are read at
    /// scrape time (build, log quota, process) set first.
    pub(crate) fn render(&self, log: &rota_store::LogUsage, process: Option<ProcessSample>) -> String {
        let build = [("version", env!("CARGO_PKG_VERSION").to_string())];
        self.gauge("rota_build_info", &build, 1.0);
        self.gauge("rota_log_live_bytes", &[], log.live_bytes as f64);
        if let Some(q) = log.quota_bytes {
            self.gauge("rota_log_quota_bytes", &[], q as f64);
        }
        let absolute =
            |name: &'static str, v: u64| self.recorder.register_counter(&key(name, &[]), &META).absolute(v);
        absolute("rota_log_quota_pruned_bytes_total", log.pruned_bytes);
        absolute("rota_log_quota_refused_bytes_total", log.refused_bytes);
        if let Some(p) = process {
            self.gauge("process_cpu_seconds_total", &[], p.cpu_seconds);
            self.gauge("process_resident_memory_bytes", &[], p.resident_bytes as f64);
            self.gauge("process_start_time_seconds", &[], p.start_time_seconds);
            if let Some(n) = p.open_fds {
                self.gauge("process_open_fds", &[], n as f64);
            }
            if let Some(n) = p.threads {
                self.gauge("process_threads", &[], n as f64);
            }
        }
        self.handle.render()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_lost_cause_is_its_own_series_and_outcomes_are_labelled() {
        let m = Metrics::default();
        for by in [LostBy::LeaseExpired, LostBy::Superseded, LostBy::Unregistered] {
            m.attempts_lost(by, 2);
        }
        m.attempt_ended("default", &AttemptOutcome::Lost { why: "fenced".into() }, Some(1500));
        m.attempt_ended("default", &AttemptOutcome::Succeeded, Some(20));
        let text = m.render(&rota_store::LogUsage::default(), None);
        for want in [
            r#"rota_attempts_lost_total{cause="lease_expired"} 2"#,
            r#"rota_attempts_lost_total{cause="superseded"} 2"#,
            r#"rota_attempts_lost_total{cause="unregistered"} 2"#,
            r#"rota_attempts_lost_total{cause="reported"} 1"#,
            r#"rota_attempts_completed_total{outcome="succeeded"} 1"#,
            r#"rota_step_duration_seconds_count{outcome="lost"} 1"#,
            "# TYPE rota_step_duration_seconds histogram",
            r#"rota_build_info{version=""#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
