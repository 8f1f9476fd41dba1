//! What `rota top` shows, as plain data: the last snapshot of the fleet, queues and running
//! jobs, the selection, the heal progress line, the log pane and the stream's state. Fed by
//! snapshots and stream events; no I/O, no clock (the caller sets `now`), no drawing.

use chrono::{DateTime, Utc};
use rota_api_types::events::StreamEvent;
use rota_api_types::fleet::QueueView;
use rota_api_types::jobs::JobSummary;
use rota_api_types::supervisors::{FleetHealResponse, SupervisorState, SupervisorView};
use rota_api_types::workers::{WorkerState, WorkerView};
use rota_domain::JobId;
use std::collections::{BTreeMap, VecDeque};

/// Most log lines the log pane keeps (its tail).
pub(crate) const LOG_TAIL: usize = 500;

/// One refresh's worth of what the server says, taken together.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) workers: Vec<WorkerView>,
    pub(crate) supervisors: Vec<SupervisorView>,
    pub(crate) queues: Vec<QueueView>,
    /// Running jobs, newest first.
    pub(crate) running: Vec<JobSummary>,
}

/// The three panes the selection moves between (Tab).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pane {
    Fleet,
    Queues,
    Jobs,
}

impl Pane {
    pub(crate) const ALL: [Pane; 3] = [Pane::Fleet, Pane::Queues, Pane::Jobs];

    fn index(self) -> usize {
        match self {
            Pane::Fleet => 0,
            Pane::Queues => 1,
            Pane::Jobs => 2,
        }
    }
}

/// How a row should look: fine, worth a look, unhealthy, or gone (an offline session:
/// stopped or superseded, nothing to fix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Ok,
    Warn,
    Bad,
    Gone,
}

/// One row of the fleet pane: a worker session or a background worker's supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FleetRow {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) state: String,
    /// Heartbeat (worker) or report (supervisor) age.
    pub(crate) seen: String,
    /// `running/concurrency` (worker).
    pub(crate) slots: String,
    pub(crate) note: String,
    pub(crate) health: Health,
}

/// The event stream's state, shown in the title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Connecting,
    Live,
    /// Lost, reconnecting; why.
    Lost(String),
}

/// The heal started from `rota top`, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Heal {
    /// Still waiting for the server's answer.
    pub(crate) running: bool,
    /// The progress line.
    pub(crate) line: String,
}

/// The log pane: the tail of one job's step logs.
#[derive(Clone, Debug)]
pub(crate) struct Logs {
    pub(crate) job: JobId,
    pub(crate) lines: VecDeque<String>,
    /// Where the next read starts (`after`).
    pub(crate) cursor: Option<i64>,
    /// Output of the last line that had no newline yet, per step.
    pub(crate) partial: BTreeMap<String, String>,
}

impl Logs {
    pub(crate) fn new(job: JobId) -> Self {
        Self { job, lines: VecDeque::new(), cursor: None, partial: BTreeMap::new() }
    }

    /// Adds a chunk of `step`'s output, split into lines prefixed with the step.
    pub(crate) fn push(&mut self, step: &str, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let held = self.partial.remove(step).unwrap_or_default() + &text;
        let mut rest = held.as_str();
        while let Some((line, more)) = rest.split_once('\n') {
            self.lines.push_back(format!("{step}: {line}"));
            rest = more;
        }
        if !rest.is_empty() {
            self.partial.insert(step.to_string(), rest.to_string());
        }
        while self.lines.len() > LOG_TAIL {
            self.lines.pop_front();
        }
    }

    /// The lines to show: the complete ones, then each step's unfinished line.
    pub(crate) fn shown(&self) -> Vec<String> {
        let mut all: Vec<String> = self.lines.iter().cloned().collect();
        all.extend(self.partial.iter().map(|(s, l)| format!("{s}: {l}")));
        all
    }
}

/// Everything `rota top` shows.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// The server(s), for the title.
    pub(crate) server: String,
    /// `namespace NS` or `all namespaces`.
    pub(crate) scope: String,
    pub(crate) all_namespaces: bool,
    /// The time ages are measured to (set before each draw).
    pub(crate) now: DateTime<Utc>,
    pub(crate) snapshot: Option<Snapshot>,
    /// When the shown snapshot was taken.
    pub(crate) loaded_at: Option<DateTime<Utc>>,
    pub(crate) stream: Stream,
    pub(crate) focus: Pane,
    selected: [usize; 3],
    /// The last thing said to the operator (an action's outcome or an error).
    pub(crate) status: String,
    pub(crate) heal: Option<Heal>,
    /// A cancel waiting for y/n.
    pub(crate) confirm: Option<JobId>,
    pub(crate) logs: Option<Logs>,
    pub(crate) help: bool,
    /// The last event seen, for the title (`kind state`).
    pub(crate) last_event: Option<String>,
}

impl Model {
    pub(crate) fn new(
        server: String,
        namespace: Option<&str>,
        all_namespaces: bool,
        now: DateTime<Utc>,
    ) -> Self {
        let scope = if all_namespaces {
            "all namespaces".to_string()
        } else {
            format!("namespace {}", namespace.unwrap_or(rota_domain::namespace::DEFAULT))
        };
        Self {
            server,
            scope,
            all_namespaces,
            now,
            snapshot: None,
            loaded_at: None,
            stream: Stream::Connecting,
            focus: Pane::Fleet,
            selected: [0; 3],
            status: "loading…".to_string(),
            heal: None,
            confirm: None,
            logs: None,
            help: false,
            last_event: None,
        }
    }

    /// Shows a new snapshot; selections stay on their rows where they still exist.
    pub(crate) fn load(&mut self, snapshot: Snapshot, at: DateTime<Utc>) {
        let first = self.snapshot.is_none();
        self.snapshot = Some(snapshot);
        self.loaded_at = Some(at);
        for pane in Pane::ALL {
            let n = self.rows(pane);
            let s = &mut self.selected[pane.index()];
            *s = (*s).min(n.saturating_sub(1));
        }
        if first {
            self.status = "? for help".to_string();
        }
    }

    /// Takes a stream event in. True when what is shown may have changed, so a refresh is
    /// due (throttled by the caller).
    pub(crate) fn on_event(&mut self, e: &StreamEvent) -> bool {
        self.stream = Stream::Live;
        self.last_event =
            Some(format!("{} {}", e.kind, e.state.as_deref().unwrap_or_default()).trim().to_string());
        match e.kind.as_str() {
            "heal" => {
                if let Some(h) = &mut self.heal
                    && h.running
                {
                    let phase = e.state.as_deref().unwrap_or_default();
                    let on = e.host.as_deref().map(|h| format!(" on {h}")).unwrap_or_default();
                    let why = e.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                    h.line = format!("heal: {phase}{on}{why}");
                }
                true
            }
            // Log activity changes no listing; only the open log pane's job needs a read.
            "logs" => self.logs.as_ref().is_some_and(|l| e.job == Some(l.job)),
            _ => true,
        }
    }

    /// The stream was (re)connected.
    pub(crate) fn stream_connected(&mut self) {
        self.stream = Stream::Live;
    }

    /// The stream was lost (the caller reconnects).
    pub(crate) fn stream_lost(&mut self, why: String) {
        self.stream = Stream::Lost(why);
    }

    /// A heal was asked for.
    pub(crate) fn heal_started(&mut self) {
        self.heal =
            Some(Heal { running: true, line: "heal: asking the server to heal failed workers…".into() });
    }

    /// The heal's answer (its events, in order), or why it failed.
    pub(crate) fn heal_finished(&mut self, outcome: Result<FleetHealResponse, String>) {
        let line = match outcome {
            Err(e) => format!("heal failed: {e}"),
            Ok(resp) => {
                let mut parts = Vec::new();
                let (mut healed, mut failed) = (0, 0);
                for e in &resp.events {
                    let who = format!(
                        "{}{}",
                        e.worker.as_deref().unwrap_or_default(),
                        e.host.as_deref().map(|h| format!(" on {h}")).unwrap_or_default()
                    );
                    match e.phase.as_str() {
                        "healed" => parts.push(format!("healed {who}")),
                        "failed" => {
                            parts.push(format!("failed {who}: {}", e.error.as_deref().unwrap_or_default()))
                        }
                        "done" => {
                            healed = e.healed.unwrap_or_default();
                            failed = e.failed.unwrap_or_default();
                        }
                        _ => {}
                    }
                }
                if healed + failed == 0 {
                    "heal: done, nothing to heal".to_string()
                } else {
                    format!("heal: done, healed {healed} worker(s), {failed} failed ({})", parts.join("; "))
                }
            }
        };
        self.heal = Some(Heal { running: false, line });
    }

    /// Whether a heal is waiting for its answer.
    pub(crate) fn healing(&self) -> bool {
        self.heal.as_ref().is_some_and(|h| h.running)
    }

    /// The fleet pane's rows: workers (by namespace and name), then supervisors.
    pub(crate) fn fleet_rows(&self) -> Vec<FleetRow> {
        let Some(s) = &self.snapshot else { return Vec::new() };
        let mut rows = Vec::new();
        let mut workers: Vec<&WorkerView> = s.workers.iter().collect();
        workers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for w in workers {
            let health = match w.state {
                WorkerState::Active => Health::Ok,
                WorkerState::Draining => Health::Warn,
                WorkerState::Stale => Health::Bad,
                WorkerState::Offline => Health::Gone,
            };
            rows.push(FleetRow {
                kind: "worker",
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                host: w.host.clone(),
                state: format!("{:?}", w.state).to_lowercase(),
                seen: format!("{} ago", crate::output::span(w.last_heartbeat_at, self.now)),
                slots: format!("{}/{}", w.running, w.concurrency),
                note: w.queues.join(","),
                health,
            });
        }
        let mut sups: Vec<&SupervisorView> = s.supervisors.iter().collect();
        sups.sort_by(|a, b| (&a.report.host, &a.report.key).cmp(&(&b.report.host, &b.report.key)));
        for v in sups {
            let r = &v.report;
            let health = match r.state {
                _ if v.stale => Health::Bad,
                SupervisorState::Running | SupervisorState::Stopped => Health::Ok,
                SupervisorState::Starting | SupervisorState::Restarting => Health::Warn,
                SupervisorState::Failed => Health::Bad,
            };
            let state =
                if v.stale { format!("{} (stale)", r.state.as_str()) } else { r.state.as_str().to_string() };
            let mut note = format!("restarts {}", r.restarts);
            if let Some(e) = r.last_error.as_deref().filter(|_| r.state == SupervisorState::Failed) {
                note.push_str(": ");
                note.push_str(e.lines().last().unwrap_or_default());
            }
            rows.push(FleetRow {
                kind: "supervisor",
                namespace: r.namespace.clone(),
                name: r.worker.clone().unwrap_or_else(|| r.key.clone()),
                host: r.host.clone(),
                state,
                seen: format!("{:.1}s ago", v.report_age_ms as f64 / 1000.0),
                slots: "-".to_string(),
                note,
                health,
            });
        }
        rows
    }

    /// The queues pane's rows, by namespace and queue.
    pub(crate) fn queue_rows(&self) -> Vec<&QueueView> {
        let Some(s) = &self.snapshot else { return Vec::new() };
        let mut q: Vec<&QueueView> = s.queues.iter().collect();
        q.sort_by(|a, b| (&a.namespace, &a.queue).cmp(&(&b.namespace, &b.queue)));
        q
    }

    /// How long the oldest waiting job of `q` has waited (`-` when none), as the server
    /// counts it (`oldestWaitingSince`).
    pub(crate) fn oldest_waiting(&self, q: &QueueView) -> String {
        match q.oldest_waiting_since {
            Some(at) => crate::output::span(at, self.now),
            None => "-".into(),
        }
    }

    /// The jobs pane's rows: running jobs, newest first.
    pub(crate) fn job_rows(&self) -> &[JobSummary] {
        self.snapshot.as_ref().map_or(&[], |s| s.running.as_slice())
    }

    fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Fleet => self.fleet_rows().len(),
            Pane::Queues => self.queue_rows().len(),
            Pane::Jobs => self.job_rows().len(),
        }
    }

    /// The selected row of `pane` (when it has rows).
    pub(crate) fn selected(&self, pane: Pane) -> Option<usize> {
        (self.rows(pane) > 0).then(|| self.selected[pane.index()])
    }

    /// The job the cancel and log keys act on: the jobs pane's selection.
    pub(crate) fn selected_job(&self) -> Option<&JobSummary> {
        self.selected(Pane::Jobs).and_then(|i| self.job_rows().get(i))
    }

    /// Moves the focused pane's selection by `delta` rows, within its rows.
    pub(crate) fn move_selection(&mut self, delta: isize) {
        let n = self.rows(self.focus);
        let s = &mut self.selected[self.focus.index()];
        *s = s.saturating_add_signed(delta).min(n.saturating_sub(1));
    }

    /// Focuses the next (or previous) pane.
    pub(crate) fn cycle_focus(&mut self, forward: bool) {
        let i = self.focus.index();
        let next = if forward { (i + 1) % 3 } else { (i + 2) % 3 };
        self.focus = Pane::ALL[next];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_api_types::supervisors::HealEvent;

    #[test]
    fn log_output_is_split_into_lines_per_step_and_keeps_its_tail() {
        let mut logs = Logs::new("01900000-0000-7000-8000-0000a1b2c3d0".parse().unwrap());
        logs.push("a", b"one\ntw");
        logs.push("b", b"x\n");
        logs.push("a", b"o\n");
        assert_eq!(logs.shown(), ["a: one", "b: x", "a: two"]);
        logs.push("a", b"half");
        assert_eq!(logs.shown().last().unwrap(), "a: half");
        for i in 0..LOG_TAIL + 10 {
            logs.push("c", format!("{i}\n").as_bytes());
        }
        assert_eq!(logs.lines.len(), LOG_TAIL);
        assert_eq!(logs.lines.back().unwrap(), &format!("c: {}", LOG_TAIL + 9));
    }

    #[test]
    fn the_heal_line_follows_the_stream_then_the_answer() {
        let mut m = Model::new("http://s".into(), None, false, Utc::now());
        m.heal_started();
        assert!(m.healing());
        let e = StreamEvent {
            kind: "heal".into(),
            state: Some("starting".into()),
            host: Some("h1".into()),
            ..StreamEvent::default()
        };
        assert!(m.on_event(&e));
        assert_eq!(m.heal.as_ref().unwrap().line, "heal: starting on h1");
        let ev = |phase: &str| HealEvent {
            phase: phase.into(),
            worker: Some("w".into()),
            host: Some("h1".into()),
            ..HealEvent::default()
        };
        let done = HealEvent { healed: Some(1), failed: Some(0), ..ev("done") };
        m.heal_finished(Ok(FleetHealResponse { events: vec![ev("starting"), ev("healed"), done] }));
        assert!(!m.healing());
        assert_eq!(
            m.heal.as_ref().unwrap().line,
            "heal: done, healed 1 worker(s), 0 failed (healed w on h1)"
        );
        m.heal_finished(Ok(FleetHealResponse {
            events: vec![HealEvent { healed: Some(0), failed: Some(0), ..ev("done") }],
        }));
        assert_eq!(m.heal.as_ref().unwrap().line, "heal: done, nothing to heal");
    }

    #[test]
    fn only_the_open_log_panes_log_events_ask_for_a_refresh() {
        let mut m = Model::new("http://s".into(), None, false, Utc::now());
        let job: JobId = "01900000-0000-7000-8000-0000a1b2c3d0".parse().unwrap();
        let logs = StreamEvent { kind: "logs".into(), job: Some(job), ..StreamEvent::default() };
        assert!(!m.on_event(&logs));
        m.logs = Some(Logs::new(job));
        assert!(m.on_event(&logs));
        assert!(m.on_event(&StreamEvent { kind: "worker".into(), ..StreamEvent::default() }));
    }
}
