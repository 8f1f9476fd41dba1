//! Worker reports on attempts they hold: the pid at start and the outcome at the end.
//! Fencing lives here: only the holding session may report, a repeat of the recorded
//! outcome is answered with it, anything else is a `Conflict` that changes nothing. A batch
//! locks the job rows it touches first, in job id order, so two servers completing steps
//! of the same jobs never deadlock, then its attempt rows in attempt id order, so a
//! heartbeat renewing them never deadlocks with it.
//!
//! Set-based where it is safe: the locks and the reads every item needs (job rows, attempt
//! rows, the jobs' steps) are one round trip for the whole batch, and an item that is the
//! only one of its job in the batch, on a live job, is settled in memory by
//! `rota_domain::settle` and written with the batch's other such items, one statement per
//! table. The rest (several items of one job, whose settlements build on each other; an
//! ended job; a settlement that ends pending steps) run one by one in a savepoint each, as
//! before, on the rows already locked.

use crate::attempts::{AttemptRow, decode, end_attempt, load_attempt};
use crate::codec::parse_name;
use crate::error::{Result, conflict, corrupt, not_found};
use crate::tx::{Tx, exec, item, rows};
use chrono::{DateTime, Utc};
use rota_domain::{
    AttemptId, AttemptOutcome, AttemptStatus, Ended, JobChange, JobId, JobState, SessionId, Settlement,
    StoredStep,
};
use rota_store::{Completion, CompletionRecorded, ConflictKind};
use std::collections::{BTreeSet, HashMap, HashSet};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

const SET_PID: &str = "UPDATE attempts SET pid = $2 WHERE id = $1";
const SET_OUTPUTS: &str = "UPDATE attempts SET outputs = $2 WHERE id = $1";

/// The job rows of the batch's attempts, locked in job id order (a job pruned meanwhile
/// has none: its item finds no attempt and says so).
///
/// `= ANY(ARRAY(..))`, not `IN (SELECT ..)`, here and in [`STEPS`]: the array is computed
/// once and the outer table is read by its index whatever the planner believes about the
/// tables' sizes. With `IN`, a table never analyzed (a server with autovacuum off) was read
/// by a hash semi-join over a sequential scan of every step: 42 ms per completion batch at
/// 50 000 steps, which made PostgreSQL's server capacity fall as the table grew.
pub(crate) const LOCK_JOBS: &str = "SELECT id, state, reason IS NOT NULL FROM jobs \
     WHERE id = ANY(ARRAY(SELECT job_id FROM attempts WHERE id = ANY($1))) ORDER BY id FOR UPDATE";

/// The batch's attempt rows, locked in attempt id order (after their jobs' rows): the order
/// a heartbeat renewing the same attempts locks them in (`lease::RENEW`). Read once locked,
/// they are current.
const LOCK_ATTEMPTS: &str = "SELECT id, job_id, step, number, session, status, outcome, stop_cause \
     FROM attempts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// Every step of the batch's jobs, in document order (read under their jobs' locks).
pub(crate) const STEPS: &str = "SELECT job_id, name, state, reason FROM steps \
     WHERE job_id = ANY(ARRAY(SELECT job_id FROM attempts WHERE id = ANY($1))) ORDER BY job_id, idx";

// `attempts::END_ATTEMPT` over arrays; outputs (NULL: none) only ever come with a success.
const END_ATTEMPTS: &str = "UPDATE attempts a SET status = t.status, outcome = t.outcome, \
     reason = t.reason, \
     finished_at = CASE WHEN t.run_ms IS NULL THEN $2::timestamptz \
         ELSE GREATEST(a.started_at, LEAST($2::timestamptz, a.started_at + t.run_ms * interval '1 millisecond')) END, \
     lease_expires_at = NULL, outputs = COALESCE(t.outputs, a.outputs) \
     FROM unnest($1::int8[], $3::text[], $4::jsonb[], $5::text[], $6::int8[], $7::text[]) \
         AS t(id, status, outcome, reason, run_ms, outputs) \
     WHERE a.id = t.id";

// `settle::SET_STEP` over arrays.
const SET_STEPS: &str = "UPDATE steps s SET state = t.state, reason = t.reason, run_after = t.run_after \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         AS t(job_id, name, state, reason, run_after) \
     WHERE s.job_id = t.job_id AND s.name = t.name";

// `settle::{SET_JOB_STATE, FINISH_JOB, SET_FINISHED_AT}` over arrays (kind `live`, `end`,
// `finished`). Returns the rows written: a `finished` job is one only if it had no end time.
const SET_JOBS: &str = "UPDATE jobs j SET state = COALESCE(t.state, j.state), \
     reason = COALESCE(t.reason, j.reason), \
     finished_at = CASE WHEN t.kind = 'live' THEN j.finished_at ELSE $2::timestamptz END \
     FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[]) AS t(id, kind, state, reason) \
     WHERE j.id = t.id AND (t.kind <> 'finished' OR j.finished_at IS NULL) \
     RETURNING j.id";

/// Records the pid of a running attempt the session holds.
pub(crate) async fn record_start(
    tx: &Tx<'_>,
    session: SessionId,
    attempt: AttemptId,
    pid: u32,
) -> Result<()> {
    let a = load_attempt(tx, attempt).await?.ok_or_else(|| not_found(format!("attempt {attempt}")))?;
    check_held(&a, session)?;
    exec(tx, SET_PID, &[&attempt.0, &i64::from(pid)]).await?;
    Ok(())
}

/// Records each completion after locking every job row and attempt row they touch.
pub(crate) async fn complete(
    tx: &mut Tx<'_>,
    items: &[Completion],
    now: DateTime<Utc>,
) -> Result<Vec<rota_store::Result<CompletionRecorded>>> {
    let ids: Vec<i64> = items.iter().map(|c| c.attempt_id.0).collect();
    // Pipelined (sent together, run in the order sent): job rows locked, then attempt rows
    // locked and read, then the steps read, in one round trip. Each statement is prepared
    // first: one still being prepared would be sent after the others.
    for sql in [LOCK_JOBS, LOCK_ATTEMPTS, STEPS] {
        tx.prepare_cached(sql).await?;
    }
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    let (job_rows, attempt_rows, step_rows) = tokio::try_join!(
        rows(tx, LOCK_JOBS, &params),
        rows(tx, LOCK_ATTEMPTS, &params),
        rows(tx, STEPS, &params)
    )?;
    let mut jobs: HashMap<Uuid, (JobState, bool)> = HashMap::with_capacity(job_rows.len());
    for r in &job_rows {
        jobs.insert(r.try_get(0)?, (parse_name(r.try_get(1)?)?, r.try_get(2)?));
    }
    let mut attempts: HashMap<i64, AttemptRow> = HashMap::with_capacity(attempt_rows.len());
    for r in &attempt_rows {
        let a = decode(r)?;
        attempts.insert(a.id.0, a);
    }
    let mut steps: HashMap<Uuid, Vec<StoredStep>> = HashMap::with_capacity(jobs.len());
    for r in &step_rows {
        steps.entry(r.try_get(0)?).or_default().push(StoredStep {
            name: r.try_get(1)?,
            state: parse_name(r.try_get(2)?)?,
            reason: r.try_get(3)?,
        });
    }
    // Items per job: one job's settlements build on each other, so such items go one by one.
    let mut per_job: HashMap<Uuid, usize> = HashMap::new();
    for c in items {
        if let Some(a) = attempts.get(&c.attempt_id.0) {
            *per_job.entry(a.job_id.0).or_default() += 1;
        }
    }
    let mut out: Vec<Option<rota_store::Result<CompletionRecorded>>> = Vec::with_capacity(items.len());
    let mut writes = Writes::default();
    for c in items {
        let fast = attempts.get(&c.attempt_id.0).and_then(|a| {
            let job = jobs.get(&a.job_id.0)?;
            let alone = per_job.get(&a.job_id.0) == Some(&1);
            (alone && !job.0.is_terminal()).then_some((a, *job))
        });
        let Some((a, (job_state, job_has_reason))) = fast else {
            out.push(None);
            continue;
        };
        let job_steps = steps.get(&a.job_id.0).map(Vec::as_slice).unwrap_or_default();
        match settle_in_memory(tx, c, a, job_state, job_has_reason, job_steps, now).await {
            Ok(Planned::Answered(recorded)) => out.push(Some(Ok(recorded))),
            Ok(Planned::Settle(plan)) => match writes.add(c, a, job_state, job_steps, plan) {
                Ok(recorded) => out.push(Some(Ok(recorded))),
                Err(e) => out.push(Some(Err(e.into()))),
            },
            Err(e) if e.ends_the_batch() => return Err(e),
            Err(e) => out.push(Some(Err(e.into()))),
        }
    }
    let finished = writes.send(tx, now).await?;
    let mut results = Vec::with_capacity(items.len());
    for (c, r) in items.iter().zip(out) {
        results.push(match r {
            Some(Ok(mut recorded)) => {
                if recorded.job_state.is_some() && !recorded.job_finished {
                    // A `finished` write: recorded only if the job had no end time yet.
                    recorded.job_finished = finished.contains(&c.job_id.0);
                    if !recorded.job_finished {
                        recorded.job_state = None;
                    }
                }
                if recorded.job_finished {
                    crate::spec_cache::forget(c.job_id);
                }
                Ok(recorded)
            }
            Some(Err(e)) => Err(e),
            None => item!(tx, |sp| complete_one(sp, c, now).await),
        });
    }
    Ok(results)
}

/// What the fencing checks and the domain made of one item, before anything is written.
enum Planned {
    /// Answered without a write (a repeat of the recorded outcome).
    Answered(CompletionRecorded),
    /// The attempt ends so.
    Settle(Settlement),
}

/// The checks of `complete_one` and the domain's settlement of one item, on the rows the
/// batch read. A refusal is the item's error; nothing is written either way.
async fn settle_in_memory(
    tx: &Tx<'_>,
    c: &Completion,
    a: &AttemptRow,
    job: JobState,
    job_has_reason: bool,
    steps: &[StoredStep],
    now: DateTime<Utc>,
) -> Result<Planned> {
    if let Some(answer) = check_item(a, c)? {
        return Ok(Planned::Answered(answer));
    }
    let spec = crate::spec_cache::spec(tx, a.job_id).await?;
    let plan = rota_domain::settle(&Ended {
        spec: &spec,
        job,
        job_has_reason,
        steps,
        step: &a.step,
        number: a.number,
        outcome: &c.outcome,
        stop_cause: a.stop_cause,
        // Only consulted for an ended job, which never comes this way.
        attempts_running: false,
        now,
        jitter01: c.jitter01,
    })
    .map_err(|e| corrupt(format!("job {}: {e}", a.job_id)))?;
    Ok(Planned::Settle(plan))
}

/// The batch's set-based writes: one array per column.
#[derive(Default)]
struct Writes<'a> {
    attempt_ids: Vec<i64>,
    statuses: Vec<&'static str>,
    outcomes: Vec<Json<&'a AttemptOutcome>>,
    reasons: Vec<String>,
    run_ms: Vec<Option<i64>>,
    outputs: Vec<Option<String>>,
    step_jobs: Vec<Uuid>,
    step_names: Vec<String>,
    step_states: Vec<&'static str>,
    step_reasons: Vec<Option<String>>,
    step_run_after: Vec<Option<DateTime<Utc>>>,
    /// Settlements that end pending steps: written one by one (`settle::apply`), in the
    /// order those writes need.
    one_by_one: Vec<(JobId, JobState, Vec<StoredStep>, Settlement)>,
    job_ids: Vec<Uuid>,
    job_kinds: Vec<&'static str>,
    job_states: Vec<Option<&'static str>>,
    job_reasons: Vec<Option<String>>,
}

impl<'a> Writes<'a> {
    /// Adds an attempt's end and its settlement; returns the item's answer, whose job end
    /// is confirmed by `send` for a `finished` write.
    fn add(
        &mut self,
        c: &'a Completion,
        a: &AttemptRow,
        job_state: JobState,
        steps: &[StoredStep],
        plan: Settlement,
    ) -> Result<CompletionRecorded> {
        // What can fail comes first, so a refused item leaves nothing behind.
        let outputs = c.outputs_to_record().map(serde_json::to_string).transpose()?;
        let mut seen = BTreeSet::new();
        let one_by_one = plan.pending.is_some() || !plan.steps.iter().all(|s| seen.insert(s.step));
        let names = plan
            .steps
            .iter()
            .map(|change| {
                steps
                    .get(change.step)
                    .map(|s| s.name.clone())
                    .ok_or_else(|| corrupt(format!("job {}: no step {}", a.job_id, change.step)))
            })
            .collect::<Result<Vec<String>>>()?;
        self.attempt_ids.push(a.id.0);
        self.statuses.push(c.outcome.status().as_str());
        self.outcomes.push(Json(&c.outcome));
        self.reasons.push(c.outcome.reason());
        self.run_ms.push(c.run_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX)));
        self.outputs.push(outputs);
        let mut recorded = CompletionRecorded {
            attempt_id: a.id,
            status: c.outcome.status(),
            outcome: c.outcome.clone(),
            repeated: false,
            job_finished: false,
            job_state: None,
            readied: plan.readied,
        };
        match &plan.job {
            JobChange::End { state, .. } => {
                recorded.job_finished = true;
                recorded.job_state = Some(*state);
            }
            // Confirmed once written (`send`).
            JobChange::Finished => recorded.job_state = Some(job_state),
            JobChange::Keep | JobChange::Live { .. } => {}
        }
        if one_by_one {
            self.one_by_one.push((a.job_id, job_state, steps.to_vec(), plan));
            return Ok(recorded);
        }
        for (change, name) in plan.steps.iter().zip(names) {
            self.step_jobs.push(a.job_id.0);
            self.step_names.push(name);
            self.step_states.push(change.state.as_str());
            self.step_reasons.push(change.reason.as_ref().map(ToString::to_string));
            self.step_run_after.push(change.run_after);
        }
        let (kind, state, reason) = match &plan.job {
            JobChange::Keep => return Ok(recorded),
            JobChange::Finished => ("finished", None, None),
            JobChange::Live { state, reason } => ("live", Some(state.as_str()), reason.as_ref()),
            JobChange::End { state, reason } => ("end", Some(state.as_str()), reason.as_ref()),
        };
        self.job_ids.push(a.job_id.0);
        self.job_kinds.push(kind);
        self.job_states.push(state);
        self.job_reasons.push(reason.map(ToString::to_string));
        Ok(recorded)
    }

    /// Sends the writes, one statement per table together (PostgreSQL runs them in the
    /// order sent), then the settlements written one by one; returns the jobs whose end
    /// was written.
    async fn send(self, tx: &Tx<'_>, now: DateTime<Utc>) -> Result<HashSet<Uuid>> {
        if self.attempt_ids.is_empty() {
            return Ok(HashSet::new());
        }
        for sql in [END_ATTEMPTS, SET_STEPS, SET_JOBS] {
            tx.prepare_cached(sql).await?;
        }
        let attempt_params: [&(dyn ToSql + Sync); 7] = [
            &self.attempt_ids,
            &now,
            &self.statuses,
            &self.outcomes,
            &self.reasons,
            &self.run_ms,
            &self.outputs,
        ];
        let step_params: [&(dyn ToSql + Sync); 5] =
            [&self.step_jobs, &self.step_names, &self.step_states, &self.step_reasons, &self.step_run_after];
        let job_params: [&(dyn ToSql + Sync); 5] =
            [&self.job_ids, &now, &self.job_kinds, &self.job_states, &self.job_reasons];
        let step_write = async {
            if self.step_jobs.is_empty() {
                return Ok(0);
            }
            exec(tx, SET_STEPS, &step_params).await
        };
        let job_write = async {
            if self.job_ids.is_empty() {
                return Ok(Vec::new());
            }
            rows(tx, SET_JOBS, &job_params).await
        };
        let (_, _, written) =
            tokio::try_join!(exec(tx, END_ATTEMPTS, &attempt_params), step_write, job_write)?;
        let mut finished = written.iter().map(|r| r.try_get(0)).collect::<Result<HashSet<Uuid>, _>>()?;
        for (job, job_state, steps, plan) in &self.one_by_one {
            if crate::settle::apply(tx, *job, *job_state, steps, plan, now).await?.is_some() {
                finished.insert(job.0);
            }
        }
        Ok(finished)
    }
}

async fn complete_one(tx: &Tx<'_>, c: &Completion, now: DateTime<Utc>) -> Result<CompletionRecorded> {
    // The batch locked the job row and the attempt row of every attempt it names
    // (`LOCK_JOBS`, `LOCK_ATTEMPTS`), so the attempt read here is current.
    let a = load_attempt(tx, c.attempt_id)
        .await?
        .ok_or_else(|| not_found(format!("attempt {}", c.attempt_id)))?;
    if let Some(answer) = check_item(&a, c)? {
        return Ok(answer);
    }
    // Outputs only count from a success: a failed attempt's are never seen by a dependent.
    if let Some(outputs) = c.outputs_to_record() {
        exec(tx, SET_OUTPUTS, &[&a.id.0, &serde_json::to_string(outputs)?]).await?;
    }
    let settled = end_attempt(tx, &a, &c.outcome, c.run_ms, now, c.jitter01).await?;
    Ok(CompletionRecorded {
        attempt_id: a.id,
        status: c.outcome.status(),
        outcome: c.outcome.clone(),
        repeated: false,
        job_finished: settled.job_finished,
        job_state: settled.job_state,
        readied: settled.readied,
    })
}

/// The fencing of a completion: `Conflict` unless it names the attempt's job and step and
/// its session holds it; for an attempt that ended already, the answer to a repeat of its
/// recorded outcome. `None` when the attempt is the item's to end.
fn check_item(a: &AttemptRow, c: &Completion) -> Result<Option<CompletionRecorded>> {
    if a.job_id != c.job_id || a.step != c.step {
        return Err(conflict(
            ConflictKind::WrongAttempt,
            format!(
                "attempt {} belongs to job {} step '{}', not job {} step '{}'",
                a.id, a.job_id, a.step, c.job_id, c.step
            ),
        ));
    }
    if a.session != c.session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {} is held by another worker session", a.id),
        ));
    }
    if a.status != AttemptStatus::Running {
        return match &a.outcome {
            Some(recorded) if *recorded == c.outcome => Ok(Some(CompletionRecorded {
                attempt_id: a.id,
                status: a.status,
                outcome: recorded.clone(),
                repeated: true,
                job_finished: false,
                job_state: None,
                readied: 0,
            })),
            _ => {
                Err(conflict(ConflictKind::Ended, format!("attempt {} already ended as {}", a.id, a.status)))
            }
        };
    }
    Ok(None)
}

/// `Conflict` unless `session` holds the running attempt.
pub(crate) fn check_held(a: &AttemptRow, session: SessionId) -> Result<()> {
    if a.session != session {
        return Err(conflict(
            ConflictKind::NotHeld,
            format!("attempt {} is held by another worker session", a.id),
        ));
    }
    if a.status != AttemptStatus::Running {
        return Err(conflict(
            ConflictKind::Ended,
            format!("attempt {} is no longer running ({})", a.id, a.status),
        ));
    }
    Ok(())
}
