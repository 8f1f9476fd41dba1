//! Parsed job documents kept by the thread that uses them. A job's document never changes
//! after submit, yet claiming and settling each read it back from JSON: in the
//! server-capacity profile that parse was about a fifth of the writer's time per job. The
//! writer owns one thread, so a thread-local map needs no lock. It is only a cache: a miss
//! reads the row, and a stale entry cannot be hit because job ids are never reused.
//!
//! Bounded twice: by entries, and by an estimate of the memory the documents hold (their
//! JSON size plus the parsed structs), so a backlog of large documents cannot grow the
//! server's memory past the bound. Entries leave when their job finishes, so a store of
//! finished jobs holds none.

use crate::codec::from_json;
use crate::error::Result;
use crate::jobs_read::load_spec_text;
use rota_domain::{JobId, JobSpec, StepSpec};
use rusqlite::Connection;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries per thread at most. Sized so a backlog as large as the server-capacity bench's
/// (50 000 queued jobs) is claimed from memory: at 16 384 two claims in three parsed JSON.
const MAX_ENTRIES: usize = 65_536;

/// Estimated bytes held per thread at most (64 MiB): what the entry bound allows for
/// one-step shell jobs (about 700 estimated bytes each), and far fewer large documents.
const MAX_BYTES: usize = 64 << 20;

/// The map's own cost per entry beyond the documents (key, pointer, hash slot, `Arc` header).
const ENTRY_OVERHEAD: usize = 64;

#[derive(Default)]
struct Cache {
    specs: HashMap<JobId, (Arc<JobSpec>, usize)>,
    bytes: usize,
}

impl Cache {
    fn has_room(&self, cost: usize) -> bool {
        self.specs.len() < MAX_ENTRIES && self.bytes + cost <= MAX_BYTES
    }

    fn insert(&mut self, id: JobId, spec: Arc<JobSpec>, cost: usize) {
        if let Some((_, old)) = self.specs.insert(id, (spec, cost)) {
            self.bytes -= old;
        }
        self.bytes += cost;
    }

    fn clear(&mut self) {
        self.specs.clear();
        self.bytes = 0;
    }
}

thread_local! {
    static SPECS: RefCell<Cache> = RefCell::new(Cache::default());
}

/// What keeping `spec`, whose JSON is `json_len` bytes, costs: the text's size stands for
/// the strings and maps it parses into, plus the fixed structs.
pub(crate) fn cost(spec: &JobSpec, json_len: usize) -> usize {
    json_len
        + std::mem::size_of::<JobSpec>()
        + spec.steps.len() * std::mem::size_of::<StepSpec>()
        + ENTRY_OVERHEAD
}

/// The document of job `id`, from the cache or the database.
pub(crate) fn spec(conn: &Connection, id: JobId) -> Result<Arc<JobSpec>> {
    if let Some(hit) = SPECS.with(|m| m.borrow().specs.get(&id).map(|(s, _)| s.clone())) {
        return Ok(hit);
    }
    let text = load_spec_text(conn, id)?;
    let spec: Arc<JobSpec> = Arc::new(from_json(&text)?);
    remember(id, spec.clone(), cost(&spec, text.len()));
    Ok(spec)
}

/// Keeps a document this thread just read. A full cache starts over: entries of jobs that
/// ended without settling (cancelled while queued) would otherwise stay for good. A
/// document larger than the whole bound is not kept, and evicts nothing.
fn remember(id: JobId, spec: Arc<JobSpec>, cost: usize) {
    if cost > MAX_BYTES {
        return;
    }
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if !m.has_room(cost) {
            m.clear();
        }
        m.insert(id, spec, cost);
    });
}

/// Keeps a document just submitted, unless the cache is full: a backlog is claimed
/// oldest first, so the documents of the oldest queued jobs are the ones worth keeping
/// (evicting them for the newest made every claim of a large backlog a miss).
pub(crate) fn remember_new(id: JobId, spec: Arc<JobSpec>, cost: usize) {
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if m.has_room(cost) {
            m.insert(id, spec, cost);
        }
    });
}

/// Drops a finished job's document: it will rarely be needed again.
pub(crate) fn forget(id: JobId) {
    SPECS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some((_, cost)) = m.specs.remove(&id) {
            m.bytes -= cost;
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn small() -> Arc<JobSpec> {
        Arc::new(serde_json::from_str(r#"{"steps":[{"name":"s","run":"true"}]}"#).unwrap())
    }

    fn held() -> (usize, usize) {
        SPECS.with(|m| (m.borrow().specs.len(), m.borrow().bytes))
    }

    #[test]
    fn bounded_and_forgetting() {
        let id = JobId::new();
        remember(id, small(), 100);
        assert!(SPECS.with(|m| m.borrow().specs.contains_key(&id)));
        forget(id);
        assert!(!SPECS.with(|m| m.borrow().specs.contains_key(&id)));
        assert_eq!(held(), (0, 0), "forgetting returns its bytes");
        for _ in 0..=MAX_ENTRIES {
            remember(JobId::new(), small(), 10);
        }
        assert!(held().0 <= MAX_ENTRIES);
        for _ in 0..=MAX_ENTRIES {
            remember_new(JobId::new(), small(), 10);
        }
        assert!(held().0 <= MAX_ENTRIES);
    }

    /// The server-capacity bench's backlog (50 000 one-step shell jobs) fits.
    #[test]
    fn the_bench_backlog_fits() {
        let spec = JobSpec::new(vec![StepSpec::new("s", "true")]);
        let each = cost(&spec, serde_json::to_string(&spec).unwrap().len());
        assert!(each * 50_000 <= MAX_BYTES && 50_000 <= MAX_ENTRIES, "{each} bytes each");
    }

    #[test]
    fn bounded_by_bytes() {
        let big = MAX_BYTES / 4;
        for _ in 0..8 {
            remember_new(JobId::new(), small(), big);
        }
        assert_eq!(held(), (4, 4 * big), "new documents stop at the byte bound");
        let id = JobId::new();
        remember(id, small(), big);
        assert_eq!(held(), (1, big), "a read past the bound starts over");
        remember(JobId::new(), small(), MAX_BYTES + 1);
        assert_eq!(held(), (1, big), "a document larger than the bound is not kept and evicts nothing");
    }
}
