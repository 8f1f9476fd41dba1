//! Storing submitted jobs: one job row and its step rows per item, each item in its own
//! savepoint so one bad job never fails the batch. Runs on the writer with `Durability::Full`;
//! it must not decide anything beyond the initial step states.

use crate::codec::{i64_of, ms, to_json};
use crate::error::{Result, conflict};
use crate::writer::unsaved_item;
use rota_domain::{JobState, StepState};
use rota_store::ConflictKind;
use rota_store::{NewJob, StoreError, Submitted};
use rusqlite::{Connection, ErrorCode, OptionalExtension};

// Keys are unique per namespace (migration 10: `jobs_idempotency_key`).
const FIND_BY_KEY: &str = "SELECT id FROM jobs WHERE namespace = ?1 AND idempotency_key = ?2";

const INSERT_JOB: &str = "INSERT INTO jobs (id, name, queue, priority, target_host, target_tags, env, \
     idempotency_key, deadline, spec, state, created_at, namespace) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

const INSERT_STEP: &str = "INSERT INTO steps (job_id, idx, name, state, log_cap, queue, priority, \
     target_host, target_tags, namespace) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Stores each job (or finds the one its idempotency key names).
pub(crate) fn submit_jobs(
    conn: &Connection,
    jobs: Vec<NewJob>,
) -> Result<Vec<rota_store::Result<Submitted>>> {
    // Without a savepoint per job: a refusal (invalid document, taken id) happens before any
    // row is written, and a failed INSERT undoes itself.
    jobs.into_iter().map(|job| unsaved_item(conn, |c| submit_one(c, &job))).collect()
}

pub(crate) fn submit_one(conn: &Connection, job: &NewJob) -> Result<Submitted> {
    let spec = &job.spec;
    spec.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
    if let Some(key) = &spec.idempotency_key {
        let existing: Option<String> =
            conn.prepare_cached(FIND_BY_KEY)?.query_row([&spec.namespace, key], |r| r.get(0)).optional()?;
        if let Some(id) = existing {
            return Ok(Submitted { id: crate::codec::job_id(&id)?, created: false });
        }
    }
    let id = job.id.to_string();
    let tags = to_json(&spec.target.tags)?;
    let document = to_json(spec)?;
    let cached = crate::spec_cache::cost(spec, document.len());
    let inserted = conn.prepare_cached(INSERT_JOB)?.execute((
        &id,
        &spec.name,
        &spec.queue,
        spec.priority,
        &spec.target.host,
        &tags,
        to_json(&spec.env)?,
        &spec.idempotency_key,
        spec.deadline.map(ms),
        &document,
        JobState::Queued.as_str(),
        ms(job.now),
        &spec.namespace,
    ));
    if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
        && e.code == ErrorCode::ConstraintViolation
    {
        return Err(conflict(ConflictKind::Exists, format!("job {id} already exists")));
    }
    inserted?;
    let mut insert_step = conn.prepare_cached(INSERT_STEP)?;
    for (idx, step) in spec.steps.iter().enumerate() {
        let state = if step.needs.is_empty() { StepState::Ready } else { StepState::Waiting };
        insert_step.execute((
            &id,
            idx as i64,
            &step.name,
            state.as_str(),
            step.log_cap.map(i64_of),
            &spec.queue,
            spec.priority,
            &spec.target.host,
            &tags,
            &spec.namespace,
        ))?;
    }
    crate::fleet::apply_pending_revoke(
        conn,
        job.id,
        &spec.namespace,
        spec.idempotency_key.as_deref(),
        job.now,
    )?;
    // Its claim, on this same writer thread, then needs no JSON parse.
    crate::spec_cache::remember_new(job.id, std::sync::Arc::new(spec.clone()), cached);
    Ok(Submitted { id: job.id, created: true })
}
