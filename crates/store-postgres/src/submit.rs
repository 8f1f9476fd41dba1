//! Storing submitted jobs: one job row and its step rows per item. Two ways: `submit_jobs`
//! puts each item in its own savepoint so one bad job never fails the batch;
//! `submit_pipelined` (the first try of a submit group, `submit_group.rs`) sends every
//! job's statements in one pipeline with no savepoint, and any failure sends the group back
//! to `submit_jobs`. Runs durably (the server's `synchronous_commit`); it must not decide
//! anything beyond the initial step states.

use crate::codec::i64_of;
use crate::error::{Error, Result, conflict};
use crate::tx::{Sent, Tx, exec, item, opt, pipeline};
use rota_domain::{JobId, JobSpec, JobState, StepState};
use rota_store::{ConflictKind, NewJob, StoreError, Submitted};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use tokio_postgres::types::Json;

// Keys are unique per namespace (migration 5: `jobs_idempotency_key`).
const FIND_BY_KEY: &str = "SELECT id FROM jobs WHERE namespace = $1 AND idempotency_key = $2";

const INSERT_JOB: &str = "INSERT INTO jobs (id, name, queue, priority, target_host, target_tags, \
     idempotency_key, deadline, spec, state, created_at, namespace) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

// All steps of a job in one statement (arrays unnested in document order).
const INSERT_STEPS: &str = "INSERT INTO steps (job_id, idx, name, state, log_cap, queue, priority, \
     target_host, target_tags, namespace) \
     SELECT $1, s.idx - 1, s.name, s.state, s.log_cap, $5, $6, $7, $8, $9 \
     FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS s (name, state, log_cap, idx)";

/// A new job's row as `INSERT_JOB` takes it: one list of parameters for both submit paths.
struct JobRow<'a> {
    job: &'a NewJob,
    doc: Json<&'a JobSpec>,
    state: &'static str,
}

impl<'a> JobRow<'a> {
    fn of(job: &'a NewJob) -> Self {
        Self { job, doc: Json(&job.spec), state: JobState::Queued.as_str() }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        let (job, spec) = (self.job, &self.job.spec);
        [
            &job.id.0,
            &spec.name,
            &spec.queue,
            &spec.priority,
            &spec.target.host,
            &spec.target.tags,
            &spec.idempotency_key,
            &spec.deadline,
            &self.doc,
            &self.state,
            &job.now,
            &spec.namespace,
        ]
    }
}

/// The unique index of idempotency keys (a concurrent submit of the same key).
const KEY_INDEX: &str = "jobs_idempotency_key";

/// Stores each job (or finds the one its idempotency key names), one savepoint each.
pub(crate) async fn submit_jobs(
    tx: &mut Tx<'_>,
    jobs: &[NewJob],
) -> Result<Vec<rota_store::Result<Submitted>>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let r = item!(tx, |sp| submit_one(sp, job).await);
        // Lost a race for its idempotency key to a concurrent submit: that job is the one.
        let r = match r {
            Err(StoreError::Conflict(ConflictKind::Exists, ref m)) if m == KEY_INDEX => {
                match find_by_key(tx, job).await? {
                    Some(id) => Ok(Submitted { id, created: false }),
                    None => r,
                }
            }
            other => other,
        };
        out.push(r);
    }
    Ok(out)
}

/// Stores `jobs` inside a transaction that does more than submit (a submit that claims for
/// parked workers, `submit_and_claim`): first pipelined in one savepoint
/// ([`submit_pipelined`], a round trip or two for all of them), and if a statement failed,
/// that savepoint is rolled back and the jobs go through [`submit_jobs`], one savepoint each,
/// so a bad job still fails alone and the rest of the transaction is kept.
pub(crate) async fn submit_jobs_pipelined_first(
    tx: &mut Tx<'_>,
    jobs: &[NewJob],
) -> Result<Vec<rota_store::Result<Submitted>>> {
    crate::tx::begin_item(tx).await;
    let first = submit_pipelined(tx, jobs).await;
    match crate::tx::end_item(tx, first).await? {
        Ok(out) => Ok(out),
        Err(e) => {
            tracing::debug!(jobs = jobs.len(), error = %e, "a job of a submit failed: one savepoint per job");
            submit_jobs(tx, jobs).await
        }
    }
}

async fn find_by_key(tx: &Tx<'_>, job: &NewJob) -> Result<Option<JobId>> {
    let Some(key) = &job.spec.idempotency_key else { return Ok(None) };
    Ok(opt(tx, FIND_BY_KEY, &[&job.spec.namespace, key]).await?.map(|r| r.try_get(0)).transpose()?.map(JobId))
}

async fn submit_one(tx: &Tx<'_>, job: &NewJob) -> Result<Submitted> {
    let spec = &job.spec;
    spec.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
    if let Some(id) = find_by_key(tx, job).await? {
        return Ok(Submitted { id, created: false });
    }
    let row = JobRow::of(job);
    let inserted = exec(tx, INSERT_JOB, &row.params()).await;
    if let Err(e) = &inserted
        && let Some(index) = e.unique_violation()
    {
        return Err(if index == KEY_INDEX {
            // Answered by the caller once the savepoint is rolled back.
            conflict(ConflictKind::Exists, KEY_INDEX)
        } else {
            conflict(ConflictKind::Exists, format!("job {} already exists", job.id))
        });
    }
    inserted?;
    let cols = StepColumns::of(spec);
    exec(
        tx,
        INSERT_STEPS,
        &[
            &job.id.0,
            &cols.names,
            &cols.states,
            &cols.caps,
            &spec.queue,
            &spec.priority,
            &spec.target.host,
            &spec.target.tags,
            &spec.namespace,
        ],
    )
    .await?;
    crate::fleet::apply_pending_revoke(tx, job.id, &spec.namespace, spec.idempotency_key.as_deref(), job.now)
        .await?;
    // Its claim (on this server) then needs no read of the document.
    crate::spec_cache::remember_new(job.id, std::sync::Arc::new(spec.clone()));
    Ok(Submitted { id: job.id, created: true })
}

/// The columns of a job's step rows, in document order: names, initial states, log caps.
struct StepColumns<'a> {
    names: Vec<&'a str>,
    states: Vec<&'static str>,
    caps: Vec<Option<i64>>,
}

impl<'a> StepColumns<'a> {
    fn of(spec: &'a JobSpec) -> Self {
        Self {
            names: spec.steps.iter().map(|s| s.name.as_str()).collect(),
            states: spec
                .steps
                .iter()
                .map(|s| if s.needs.is_empty() { StepState::Ready } else { StepState::Waiting }.as_str())
                .collect(),
            caps: spec.steps.iter().map(|s| s.log_cap.map(i64_of)).collect(),
        }
    }
}

/// A job of a pipelined pass: answered without an insert, or to be inserted.
enum Planned {
    Answered(rota_store::Result<Submitted>),
    Insert,
}

/// Stores `jobs` as `submit_jobs` does, but with no savepoint and in few round trips: one
/// pipeline looks up the idempotency keys, one sends every job's row, step rows and pending
/// revoke check. Any failure of a statement is returned (the transaction is then aborted):
/// the caller rolls back and runs the jobs through `submit_jobs`, which tells which job
/// failed and answers it alone. Refusals that need no statement (an invalid document) are
/// answered here.
pub(crate) async fn submit_pipelined(
    tx: &Tx<'_>,
    jobs: &[NewJob],
) -> Result<Vec<rota_store::Result<Submitted>>> {
    let mut plan: Vec<Planned> = jobs
        .iter()
        .map(|j| match j.spec.validate() {
            Ok(()) => Planned::Insert,
            Err(e) => Planned::Answered(Err(StoreError::Invalid(e.to_string()))),
        })
        .collect();
    // Keys already stored: those jobs are answered with the stored one.
    let keyed: Vec<(usize, &str)> = jobs
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(plan[*i], Planned::Insert))
        .filter_map(|(i, j)| j.spec.idempotency_key.as_deref().map(|k| (i, k)))
        .collect();
    if !keyed.is_empty() {
        let find = tx.prepare_cached(FIND_BY_KEY).await?;
        let find = &find;
        let sent: Vec<Sent<'_, Result<Option<tokio_postgres::Row>>>> = keyed
            .iter()
            .map(|&(i, key)| {
                let ns = &jobs[i].spec.namespace;
                Box::pin(async move { Ok::<_, Error>(tx.query_opt(find, &[ns, &key]).await?) }) as Sent<'_, _>
            })
            .collect();
        for (&(i, _), found) in keyed.iter().zip(pipeline(sent).await) {
            if let Some(row) = found? {
                plan[i] = Planned::Answered(Ok(Submitted { id: JobId(row.try_get(0)?), created: false }));
            }
        }
        // A key twice in the group: the first job with it is the one.
        let mut first: HashMap<(&str, &str), JobId> = HashMap::new();
        for &(i, key) in &keyed {
            if !matches!(plan[i], Planned::Insert) {
                continue;
            }
            match first.entry((jobs[i].spec.namespace.as_str(), key)) {
                Entry::Occupied(e) => {
                    plan[i] = Planned::Answered(Ok(Submitted { id: *e.get(), created: false }));
                }
                Entry::Vacant(v) => {
                    v.insert(jobs[i].id);
                }
            }
        }
    }
    let inserts: Vec<&NewJob> =
        jobs.iter().zip(&plan).filter(|(_, p)| matches!(p, Planned::Insert)).map(|(j, _)| j).collect();
    if !inserts.is_empty() {
        // Prepared before the pipeline: an unprepared statement would wait for its prepare
        // and could be sent out of order.
        let insert_job = tx.prepare_cached(INSERT_JOB).await?;
        let insert_steps = tx.prepare_cached(INSERT_STEPS).await?;
        let revoked = tx.prepare_cached(crate::fleet::REVOKED_AT_SUBMIT).await?;
        let (insert_job, insert_steps, revoked) = (&insert_job, &insert_steps, &revoked);
        let cols: Vec<StepColumns<'_>> = inserts.iter().map(|j| StepColumns::of(&j.spec)).collect();
        let mut sent: Vec<Sent<'_, Result<bool>>> = Vec::with_capacity(inserts.len() * 3);
        for (&job, c) in inserts.iter().zip(&cols) {
            let spec = &job.spec;
            sent.push(Box::pin(async move {
                tx.execute(insert_job, &JobRow::of(job).params()).await?;
                Ok::<_, Error>(false)
            }));
            sent.push(Box::pin(async move {
                tx.execute(
                    insert_steps,
                    &[
                        &job.id.0,
                        &c.names,
                        &c.states,
                        &c.caps,
                        &spec.queue,
                        &spec.priority,
                        &spec.target.host,
                        &spec.target.tags,
                        &spec.namespace,
                    ],
                )
                .await?;
                Ok::<_, Error>(false)
            }));
            sent.push(Box::pin(async move {
                let key = spec.idempotency_key.as_deref();
                let row = tx.query_one(revoked, &[&job.id.0, &job.now, &key, &spec.namespace]).await?;
                Ok::<_, Error>(row.try_get::<_, bool>(0)?)
            }));
        }
        // The first failure is the cause; the statements after it only report the aborted
        // transaction.
        let mut to_revoke = Vec::new();
        for (k, r) in pipeline(sent).await.into_iter().enumerate() {
            if r? {
                to_revoke.push(inserts[k / 3]);
            }
        }
        for job in to_revoke {
            crate::fleet::end_revoked_at_submit(tx, job.id, job.now).await?;
        }
    }
    Ok(jobs
        .iter()
        .zip(plan)
        .map(|(job, p)| match p {
            Planned::Answered(r) => r,
            Planned::Insert => {
                crate::spec_cache::remember_new(job.id, std::sync::Arc::new(job.spec.clone()));
                Ok(Submitted { id: job.id, created: true })
            }
        })
        .collect())
}
