//! Parsed job documents shared by this process's transactions. A job's document never
//! changes after submit, yet every claim and every settlement read it back (a round trip
//! and a JSON parse each, two per job in the server-capacity run). It is only a cache: a
//! miss reads the row, and a stale entry cannot be hit because job ids are never reused.

use crate::error::Result;
use crate::jobs_read::load_spec;
use crate::tx::Tx;
use rota_domain::{JobId, JobSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Entries at most; past it the map starts over (a burst of misses refills it).
const MAX_ENTRIES: usize = 16_384;

static SPECS: Mutex<Option<HashMap<JobId, Arc<JobSpec>>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashMap<JobId, Arc<JobSpec>>) -> T) -> T {
    let mut guard = SPECS.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// The document of job `id`, from the cache or the database (`NotFound` if it does not exist).
pub(crate) async fn spec(tx: &Tx<'_>, id: JobId) -> Result<Arc<JobSpec>> {
    if let Some(hit) = cached(id) {
        return Ok(hit);
    }
    let spec = Arc::new(load_spec(tx, id).await?);
    remember(id, spec.clone());
    Ok(spec)
}

/// The document of job `id` if the cache holds it (no read).
pub(crate) fn cached(id: JobId) -> Option<Arc<JobSpec>> {
    with(|m| m.get(&id).cloned())
}

/// Keeps a document just stored or read.
pub(crate) fn remember(id: JobId, spec: Arc<JobSpec>) {
    with(|m| {
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(id, spec);
    });
}

/// Keeps a document just submitted, unless the cache is full: a backlog is claimed
/// oldest first, so the documents of the oldest queued jobs are the ones worth keeping.
pub(crate) fn remember_new(id: JobId, spec: Arc<JobSpec>) {
    with(|m| {
        if m.len() < MAX_ENTRIES {
            m.insert(id, spec);
        }
    });
}

/// Drops a finished job's document: it will rarely be needed again.
pub(crate) fn forget(id: JobId) {
    with(|m| m.remove(&id));
}
