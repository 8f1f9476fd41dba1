//! The schedule controller: turns the fire times of `Schedule` resources into runs of their
//! workflows. Level-triggered: each tick (every 500 ms, and at once when a resource is
//! applied) it reads every schedule and its last recorded fire, computes the fire times due
//! since then (since the schedule's creation the first time), and records them through
//! `JobStore::record_fires`: the `catchup` most recent run (or are skipped / cancel the
//! previous run, per `overlap`), older ones are recorded as missed. The store records each
//! fire time once and stores a run's job with it, under the fire's idempotency key, so a
//! restart or a leader change never runs one fire time twice. Acts only while this server
//! leads; time is the store's clock. A schedule that cannot start its run (its workflow is
//! gone, its inputs no longer fit) gets condition `Ready=False` with the reason and is
//! retried with a growing backoff, never in a tight loop. Also renders `status.schedule`
//! for `GET` (next fire time, last run, recent skipped and missed fires).

use crate::error::ApiError;
use crate::state::AppState;
use chrono::{DateTime, SecondsFormat, Utc};
use rota_api_types::worker::{Command, StopOrder, StopReason};
use rota_domain::resource::{ConditionStatus, Kind, Status};
use rota_domain::schedule::{
    FIRE_TIME_ENV, FireOutcome, FireView, Overlap, SCHEDULE_ENV, ScheduleSpec, ScheduleStatus,
};
use rota_domain::workflow::WorkflowSpec;
use rota_domain::{JobId, JobState};
use rota_store::bus::Event;
use rota_store::resources::{ResourceKey, ResourceRecord};
use rota_store::schedules::{FireFilter, FireRecord, NewFire, NewOutcome, fire_key};
use rota_store::{NewJob, StopKind};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often schedules are looked at: fire times have one-second granularity.
const TICK: Duration = Duration::from_millis(500);
/// First wait after a schedule failed to start its run; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Schedules read per listing page.
const PAGE: u32 = 500;
/// Skipped and missed fires `GET` shows.
const RECENT_SHOWN: u32 = 10;
/// The condition a schedule's state is reported in.
const READY: &str = "Ready";
/// Its message while the schedule fires (`status.schedule` has the times).
const SCHEDULED: &str = "fires on schedule";

/// A schedule that failed: when it may be tried again, and the next wait.
struct Backoff {
    until: Instant,
    wait: Duration,
}

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    let mut leading = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
            _ = state.resources.notified() => {}
        }
        let leads = match state.leader.lead().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether this server leads; schedules wait");
                false
            }
        };
        if leads != leading {
            leading = leads;
            if leads {
                tracing::info!(server = %state.me.id, "this server leads: it fires schedules");
            } else {
                tracing::info!(server = %state.me.id, "this server no longer leads: it stops firing schedules");
            }
        }
        if !leads {
            continue;
        }
        if let Err(e) = tick(&state, &mut backoff).await {
            tracing::warn!(error = %e, "reading schedules failed; trying again next tick");
        }
    }
}

/// One pass over every schedule.
async fn tick(
    state: &AppState,
    backoff: &mut HashMap<String, Backoff>,
) -> Result<(), rota_store::StoreError> {
    // Every namespace's schedules; the backoff is keyed by `namespace/name`.
    let mut after: Option<(String, String)> = None;
    let mut seen = Vec::new();
    loop {
        let page = state
            .store
            .list_resources(Kind::Schedule, None, after.as_ref().map(|(n, m)| (n.as_str(), m.as_str())), PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.metadata.namespace.clone(), last.metadata.name.clone()));
        for r in page {
            let name = format!("{}/{}", r.metadata.namespace, r.metadata.name);
            seen.push(name.clone());
            if backoff.get(&name).is_some_and(|b| Instant::now() < b.until) {
                continue;
            }
            match reconcile(state, r).await {
                Ok(()) => {
                    backoff.remove(&name);
                }
                Err(Failed::Store(e)) => {
                    tracing::warn!(schedule = %name, error = %e, "recording fires failed");
                    hold_off(backoff, &name);
                }
                Err(Failed::Refused) => hold_off(backoff, &name),
            }
        }
    }
    // Deleted schedules leave no backoff behind.
    backoff.retain(|k, _| seen.contains(k));
    Ok(())
}

fn hold_off(backoff: &mut HashMap<String, Backoff>, name: &str) {
    let wait = backoff.get(name).map_or(BACKOFF_MIN, |b| (b.wait * 2).min(BACKOFF_MAX));
    backoff.insert(name.to_string(), Backoff { until: Instant::now() + wait, wait });
}

enum Failed {
    /// The store failed: tried again after a backoff.
    Store(rota_store::StoreError),
    /// The schedule cannot start its run (condition written): tried again after a backoff.
    Refused,
}

impl From<rota_store::StoreError> for Failed {
    fn from(e: rota_store::StoreError) -> Self {
        Failed::Store(e)
    }
}

/// Records the condition `Ready` of `r` (only when it changes: a steady schedule writes
/// nothing per tick).
async fn observe(
    state: &AppState,
    r: &ResourceRecord,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> Result<(), rota_store::StoreError> {
    let mut s: Status = r.status.clone();
    if s.observe(r.generation, READY, status, reason, message, state.store.now()) {
        let key = ResourceKey::new(r.metadata.namespace.clone(), Kind::Schedule, r.metadata.name.clone());
        state.store.set_resource_status(&key, r.generation, &s, state.store.now()).await?;
        state.publish(vec![crate::events::status_changed(&key)]);
    }
    Ok(())
}

async fn refuse(state: &AppState, r: &ResourceRecord, reason: &str, message: &str) -> Result<(), Failed> {
    tracing::warn!(schedule = %r.metadata.name, reason, "{message}");
    observe(state, r, ConditionStatus::False, reason, message).await?;
    Err(Failed::Refused)
}

/// What became of the previous run: whether its job is still going.
async fn previous_unfinished(
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<Option<JobId>, rota_store::StoreError> {
    let Some(prev) = state.store.list_fires(namespace, name, FireFilter::Runs, 1).await?.pop() else {
        return Ok(None);
    };
    let Some(id) = prev.job_id else { return Ok(None) };
    match state.store.get_job(id).await {
        Ok(job) if !job.row.state.is_terminal() => Ok(Some(id)),
        Ok(_) | Err(rota_store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn reconcile(state: &AppState, r: ResourceRecord) -> Result<(), Failed> {
    let name = r.metadata.name.clone();
    let ns = r.metadata.namespace.clone();
    let spec: ScheduleSpec = match serde_json::from_str(&r.spec) {
        Ok(s) => s,
        Err(e) => {
            return refuse(state, &r, "InvalidSpec", &format!("the stored spec cannot be read: {e}")).await;
        }
    };
    if spec.suspend {
        observe(state, &r, ConditionStatus::False, "Suspended", "suspended: nothing fires").await?;
        return Ok(());
    }
    let compiled = match spec.compile() {
        Ok(c) => c,
        Err(e) => return refuse(state, &r, "InvalidSpec", &e.to_string()).await,
    };
    let now = state.store.now();
    let last = state.store.list_fires(&ns, &name, FireFilter::All, 1).await?.pop().map(|f| f.fire_time);
    // The first time (or once re-created): from the resource's creation, not the epoch.
    let since = last.map_or(r.created_at, |t| t.max(r.created_at));
    let due = compiled.due(since, now, spec.catchup);
    if due.run.is_empty() {
        return Ok(observe(state, &r, ConditionStatus::True, "Scheduled", SCHEDULED).await?);
    }
    // A schedule runs a workflow of its own namespace; its runs are jobs of that namespace.
    let key = ResourceKey::new(ns.clone(), Kind::Workflow, spec.workflow.clone());
    let Some(found) = state.store.get_resource(&key).await? else {
        let message = format!("workflow `{}` does not exist; `rota apply` declares it", spec.workflow);
        return refuse(state, &r, "WorkflowNotFound", &message).await;
    };
    let workflow: WorkflowSpec = match serde_json::from_str(&found.spec) {
        Ok(w) => w,
        Err(e) => return refuse(state, &r, "WorkflowUnreadable", &e.to_string()).await,
    };
    let template = match workflow.job(&spec.workflow, &spec.input_texts(), None) {
        Ok(mut j) => {
            j.namespace = ns.clone();
            j
        }
        Err(e) => {
            return refuse(state, &r, "InvalidInputs", &format!("workflow `{}`: {e}", spec.workflow)).await;
        }
    };
    let mut fires: Vec<NewFire> = due
        .missed
        .iter()
        .map(|t| NewFire {
            namespace: ns.clone(),
            schedule: name.clone(),
            fire_time: *t,
            outcome: NewOutcome::Missed,
        })
        .collect();
    let previous = match spec.overlap {
        Overlap::Allow => None,
        Overlap::Skip | Overlap::CancelPrevious => previous_unfinished(state, &ns, &name).await?,
    };
    let mut running = previous;
    let newest = due.run.last().copied();
    for t in &due.run {
        let outcome = match (spec.overlap, running) {
            (Overlap::Skip, Some(_)) => NewOutcome::Skipped,
            // Of several due at once only the newest runs; it would cancel the others.
            (Overlap::CancelPrevious, _) if Some(*t) != newest => NewOutcome::Skipped,
            _ => {
                let mut job = template.clone();
                job.idempotency_key = Some(fire_key(&name, *t));
                // Steps can tell which fire time they run for (a report's date, say).
                job.env.insert(SCHEDULE_ENV.to_string(), name.clone().into());
                job.env
                    .insert(FIRE_TIME_ENV.to_string(), t.to_rfc3339_opts(SecondsFormat::Secs, true).into());
                let id = JobId::new();
                running = Some(id);
                NewOutcome::Run(Box::new(NewJob { id, spec: job, now }))
            }
        };
        fires.push(NewFire { namespace: ns.clone(), schedule: name.clone(), fire_time: *t, outcome });
    }
    let recorded = match state.store.record_fires(fires, now).await {
        Ok(r) => r,
        Err(rota_store::StoreError::Invalid(m)) => return refuse(state, &r, "RunRefused", &m).await,
        Err(e) => return Err(e.into()),
    };
    // Cancelled only once its successor is recorded: a failed recording cancels nothing.
    let started = recorded.iter().any(|f| f.created && f.outcome == FireOutcome::Run);
    if spec.overlap == Overlap::CancelPrevious
        && started
        && let Some(prev) = previous
    {
        cancel(state, &name, &r.metadata.namespace, prev).await?;
    }
    announce(state, &name, &r.metadata.namespace, &recorded, due.truncated);
    // One message whatever fired: a steady schedule writes its status once, not per fire.
    observe(state, &r, ConditionStatus::True, "Scheduled", SCHEDULED).await?;
    Ok(())
}

/// `overlap: cancel_previous`: the previous run ends as an operator's cancel would end it.
async fn cancel(
    state: &AppState,
    schedule: &str,
    namespace: &str,
    id: JobId,
) -> Result<(), rota_store::StoreError> {
    let out = state.store.stop_job(id, StopKind::Cancel, state.store.now()).await?;
    tracing::info!(schedule, job_id = %id, "overlap cancel_previous: cancelled the previous run");
    let stops: Vec<_> = out
        .running
        .iter()
        .map(|r| {
            (
                r.session,
                Command::Stop(StopOrder {
                    attempt_id: r.attempt_id,
                    reason: StopReason::Cancelled,
                    signal: None,
                }),
            )
        })
        .collect();
    if !stops.is_empty() {
        state.hub.push_all(stops, state.config.lease_ttl);
    }
    state.publish(vec![Event::Job {
        job: id,
        state: Some(out.row.state),
        namespace: Some(namespace.to_string()),
    }]);
    Ok(())
}

/// Logs what was recorded and tells the fleet about the new jobs.
fn announce(state: &AppState, schedule: &str, namespace: &str, recorded: &[FireRecord], truncated: bool) {
    let mut events = Vec::new();
    let (mut missed, mut skipped) = (0usize, 0usize);
    for f in recorded.iter().filter(|f| f.created) {
        match (f.outcome, f.job_id) {
            (FireOutcome::Run, Some(job)) => {
                tracing::info!(schedule, fire_time = %f.fire_time.to_rfc3339(), job_id = %job, "schedule fired: run started");
                state.metrics.jobs_submitted(1);
                events.push(Event::Job {
                    job,
                    state: Some(JobState::Queued),
                    namespace: Some(namespace.to_string()),
                });
            }
            (FireOutcome::Skipped, _) => skipped += 1,
            _ => missed += 1,
        }
    }
    if skipped > 0 {
        tracing::info!(
            schedule,
            skipped,
            "fire times skipped: the previous run had not finished (overlap skip)"
        );
    }
    if missed > 0 {
        tracing::info!(schedule, missed, truncated, "fire times missed (older than catchup)");
    }
    if !events.is_empty() {
        events.insert(0, Event::Claimable);
        state.publish(events);
    }
}

async fn view_of(state: &AppState, f: FireRecord) -> Result<FireView, ApiError> {
    let job_state = match f.job_id {
        Some(id) => match state.store.get_job(id).await {
            Ok(j) => Some(j.row.state),
            Err(rota_store::StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    Ok(FireView { fire_time: f.fire_time, outcome: f.outcome, job_id: f.job_id, state: job_state })
}

/// `status.schedule` of a schedule as `GET` shows it, computed now.
pub(crate) async fn status_of(
    state: &AppState,
    namespace: &str,
    name: &str,
    spec: &ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<ScheduleStatus, ApiError> {
    let next_fire_time = match (spec.suspend, spec.compile()) {
        (false, Ok(c)) => c.next_after(now),
        _ => None,
    };
    let last_run = match state.store.list_fires(namespace, name, FireFilter::Runs, 1).await?.pop() {
        Some(f) => Some(view_of(state, f).await?),
        None => None,
    };
    let mut recent_not_run = Vec::new();
    for f in state.store.list_fires(namespace, name, FireFilter::NotRun, RECENT_SHOWN).await? {
        recent_not_run.push(view_of(state, f).await?);
    }
    Ok(ScheduleStatus {
        cron: spec.cron.clone(),
        time_zone: spec.zone_name().to_string(),
        next_fire_time,
        last_run,
        recent_not_run,
    })
}
