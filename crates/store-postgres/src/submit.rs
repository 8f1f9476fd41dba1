//! Storing submitted jobs: one job row and its step rows per item, each item in its own
//! savepoint so one bad job never fails the batch. Runs durably (the server's
//! `synchronous_commit`); it must not decide anything beyond the initial step states.

use crate::codec::i64_of;
use crate::error::{Result, conflict};
use crate::tx::{Tx, exec, item, opt};
use rota_domain::{JobId, JobState, StepState};
use rota_store::{ConflictKind, NewJob, StoreError, Submitted};
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

/// The unique index of idempotency keys (a concurrent submit of the same key).
const KEY_INDEX: &str = "jobs_idempotency_key";

/// Stores each job (or finds the one its idempotency key names), one savepoint each.
pub(crate) async fn submit_jobs(
    tx: &mut Tx<'_>,
    jobs: &[NewJob],
) -> Result<Vec<rota_store::Result<Submitted>>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let r = item!(tx, |sp| submit_one(&sp, job).await);
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
    let inserted = exec(
        tx,
        INSERT_JOB,
        &[
            &job.id.0,
            &spec.name,
            &spec.queue,
            &spec.priority,
            &spec.target.host,
            &spec.target.tags,
            &spec.idempotency_key,
            &spec.deadline,
            &Json(spec),
            &JobState::Queued.as_str(),
            &job.now,
            &spec.namespace,
        ],
    )
    .await;
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
    let names: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    let states: Vec<&str> = spec
        .steps
        .iter()
        .map(|s| if s.needs.is_empty() { StepState::Ready } else { StepState::Waiting }.as_str())
        .collect();
    let caps: Vec<Option<i64>> = spec.steps.iter().map(|s| s.log_cap.map(i64_of)).collect();
    exec(
        tx,
        INSERT_STEPS,
        &[
            &job.id.0,
            &names,
            &states,
            &caps,
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
