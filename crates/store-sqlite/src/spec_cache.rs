//! Parsed job documents kept by the thread that uses them. A job's document never changes
//! after submit, yet claiming and settling each read it back from JSON: in the
//! server-capacity profile that parse was about a fifth of the writer's time per job. The
//! writer owns one thread, so a thread-local map needs no lock. It is only a cache: a miss
//! reads the row, and a stale entry cannot be hit because job ids are never reused.

use crate::error::Result;
use crate::jobs_read::load_spec;
use rota_domain::{JobId, JobSpec};
use rusqlite::Connection;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries per thread at most; past it the map starts over (a burst of misses refills it).
const MAX_ENTRIES: usize = 16_384;

thread_local! {
    static SPECS: RefCell<HashMap<JobId, Arc<JobSpec>>> = RefCell::new(HashMap::new());
}

/// The document of job `id`, from the cache or the database.
pub(crate) fn spec(conn: &Connection, id: JobId) -> Result<Arc<JobSpec>> {
    if let Some(hit) = SPECS.with(|m| m.borrow().get(&id).cloned()) {
        return Ok(hit);
    }
    let spec = Arc::new(load_spec(conn, id)?);
    remember(id, spec.clone());
    Ok(spec)
}

/// Keeps a document this thread just stored or read.
pub(crate) fn remember(id: JobId, spec: Arc<JobSpec>) {
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(id, spec);
    });
}

/// Keeps a document just submitted, unless the cache is full: a backlog is claimed
/// oldest first, so the documents of the oldest queued jobs are the ones worth keeping
/// (evicting them for the newest made every claim of a large backlog a miss).
pub(crate) fn remember_new(id: JobId, spec: Arc<JobSpec>) {
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < MAX_ENTRIES {
            m.insert(id, spec);
        }
    });
}

/// Drops a finished job's document: it will rarely be needed again.
pub(crate) fn forget(id: JobId) {
    SPECS.with(|m| m.borrow_mut().remove(&id));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgetting() {
        let id = JobId::new();
        let spec: JobSpec = serde_json::from_str(r#"{"steps":[{"name":"s","run":"true"}]}"#).unwrap();
        remember(id, Arc::new(spec));
        assert!(SPECS.with(|m| m.borrow().contains_key(&id)));
        forget(id);
        assert!(!SPECS.with(|m| m.borrow().contains_key(&id)));
        for _ in 0..=MAX_ENTRIES {
            remember(
                JobId::new(),
                Arc::new(serde_json::from_str(r#"{"steps":[{"name":"s","run":"true"}]}"#).unwrap()),
            );
        }
        assert!(SPECS.with(|m| m.borrow().len()) <= MAX_ENTRIES);
    }
}
