//! Store records → API views, including the derived `unschedulable` state and worker
//! staleness (derived from the last heartbeat, never stored).

use rota_api_types::jobs::{AttemptView, JobDetail, JobSummary, StepCounts, StepView};
use rota_api_types::workers::{WorkerState, WorkerView};
use rota_domain::JobState;
use rota_store::{JobRecord, JobRow, SessionStatus, WorkerRecord};
use std::time::Duration;

/// Live workers' (name, host, tags, queues), to decide whether a queued job can be taken.
pub(crate) struct Fleet {
    live: Vec<WorkerRecord>,
}

impl Fleet {
    pub(crate) fn new(workers: Vec<WorkerRecord>, ttl: Duration) -> Self {
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let live = workers
            .into_iter()
            .filter(|w| {
                w.status == SessionStatus::Active && now.signed_duration_since(w.last_heartbeat_at) <= ttl
            })
            .collect();
        Self { live }
    }

    /// True if some live worker of the job's namespace claims from its queue and matches
    /// its target.
    pub(crate) fn can_take(&self, row: &JobRow) -> bool {
        self.live.iter().any(|w| {
            w.namespace == row.namespace
                && w.queues.contains(&row.queue)
                && row.target.admits(&w.name, &w.host, &w.tags)
        })
    }

    /// The state shown to people: `unschedulable` for a queued job no live worker can take.
    pub(crate) fn display_state(&self, row: &JobRow) -> String {
        if row.state == JobState::Queued && !self.can_take(row) {
            "unschedulable".into()
        } else {
            row.state.as_str().into()
        }
    }
}

pub(crate) fn summary(row: &JobRow, fleet: &Fleet) -> JobSummary {
    let state = fleet.display_state(row);
    let reason = if state == "unschedulable" { Some(unschedulable_reason(row)) } else { row.reason.clone() };
    JobSummary {
        id: row.id,
        namespace: row.namespace.clone(),
        name: row.name.clone(),
        queue: row.queue.clone(),
        priority: row.priority,
        state,
        reason,
        steps: StepCounts {
            total: row.counts.total,
            succeeded: row.counts.succeeded,
            running: row.counts.running,
            failed: row.counts.failed,
        },
        created_at: row.created_at,
        finished_at: row.finished_at,
    }
}

fn unschedulable_reason(row: &JobRow) -> String {
    let mut want = format!("no live worker claims queue '{}'", row.queue);
    if !rota_domain::namespace::is_default(&row.namespace) {
        want.push_str(&format!(" in namespace '{}'", row.namespace));
    }
    if let Some(h) = &row.target.host {
        want.push_str(&format!(" on host '{h}'"));
    }
    let prefix = rota_domain::hostconfig::PROJECT_TAG_PREFIX;
    let (projects, tags): (Vec<&String>, Vec<&String>) =
        row.target.tags.iter().partition(|t| t.starts_with(prefix));
    if !tags.is_empty() {
        want.push_str(&format!(
            " with tags [{}]",
            tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for p in projects {
        want.push_str(&format!(
            " that maps project '{}' (a WorkerConfig's projects)",
            p.trim_start_matches(prefix)
        ));
    }
    want
}

pub(crate) fn detail(rec: &JobRecord, fleet: &Fleet) -> JobDetail {
    JobDetail {
        summary: summary(&rec.row, fleet),
        spec: rec.spec.clone(),
        step_details: rec
            .steps
            .iter()
            .map(|s| StepView {
                name: s.name.clone(),
                state: s.state,
                reason: s.reason.clone(),
                run_after: s.run_after,
                attempts: s
                    .attempts
                    .iter()
                    .map(|a| AttemptView {
                        attempt_id: a.id,
                        number: a.number,
                        worker: a.worker.clone(),
                        status: a.status,
                        exit_code: a.exit_code(),
                        reason: a.reason.clone(),
                        pid: a.pid,
                        started_at: a.started_at,
                        finished_at: a.finished_at,
                        outputs: a.outputs.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub(crate) fn worker_view(w: &WorkerRecord, ttl: Duration) -> WorkerView {
    let age = chrono::Utc::now().signed_duration_since(w.last_heartbeat_at);
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let state = match w.status {
        SessionStatus::Offline => WorkerState::Offline,
        _ if age > ttl => WorkerState::Stale,
        SessionStatus::Draining => WorkerState::Draining,
        SessionStatus::Active => WorkerState::Active,
    };
    WorkerView {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        session_id: w.session,
        host: w.host.clone(),
        profile: w.profile.clone(),
        version: w.version.clone(),
        queues: w.queues.clone(),
        tags: w.tags.clone(),
        concurrency: w.concurrency,
        state,
        running: w.running,
        registered_at: w.registered_at,
        last_heartbeat_at: w.last_heartbeat_at,
        instance_id: w.instance_id.clone(),
    }
}
