//! Query plans of the hot paths, checked against a migrated schema: each must search an
//! index, never scan a table whose size grows with history (steps, attempts). A plan that
//! silently falls back to a scan stays correct and gets slower with every job ever run,
//! which no functional test would notice.

#![allow(clippy::unwrap_used)]

use crate::schema::{MAIN, migrate, open_writer};
use std::time::Duration;

/// The `detail` column of EXPLAIN QUERY PLAN for `sql`, with `?N` bound to NULLs.
fn plan(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = st.parameter_count();
    let params: Vec<rusqlite::types::Null> = vec![rusqlite::types::Null; n];
    let rows = st.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3)).unwrap();
    rows.collect::<rusqlite::Result<Vec<_>>>().unwrap()
}

fn assert_uses(conn: &rusqlite::Connection, what: &str, sql: &str, index: &str) {
    let p = plan(conn, sql);
    let joined = p.join(" | ");
    assert!(joined.contains(index), "{what}: expected {index} in plan: {joined}");
    for table in ["steps", "attempts"] {
        let scan = p.iter().any(|d| d.starts_with(&format!("SCAN {table}")) && !d.contains("USING"));
        assert!(!scan, "{what}: full scan of {table}: {joined}");
    }
}

#[test]
fn hot_queries_search_the_partial_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
    migrate(&mut conn, MAIN, &path).unwrap();
    assert_uses(&conn, "claim candidates", crate::claim::CANDIDATES, "steps_ready");
    assert_uses(&conn, "queue depths", crate::fleet::QUEUE_DEPTHS, "steps_running");
    assert_uses(&conn, "queue depths", crate::fleet::QUEUE_DEPTHS, "steps_ready");
    assert_uses(&conn, "lease expiry", crate::lease::EXPIRED, "attempts_lease");
    assert_uses(&conn, "held attempts", crate::workers::HELD_ATTEMPTS, "attempts_session");
    assert_uses(&conn, "worker by token", crate::workers::BY_TOKEN, "attempts_session");
    assert_uses(&conn, "leases after a restart", crate::lease::EXTEND_ALL, "attempts_lease");
    assert_uses(&conn, "a job's running attempts", crate::control::RUNNING_OF_JOB, "attempts_step");
    assert_uses(&conn, "settling: a job and its steps", crate::settle::JOB_AND_STEPS, "steps_job_idx");
    assert_uses(&conn, "job listing", crate::jobs_read::LIST_JOBS, "sqlite_autoindex_jobs_1");
}

/// Migration 13 dropped the job indexes no query read; every statement on `jobs` still
/// finds its rows through an index it has.
#[test]
fn no_query_needs_the_dropped_job_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
    migrate(&mut conn, MAIN, &path).unwrap();
    let left: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        left,
        ["jobs_deadline", "jobs_finished_at", "jobs_idempotency_key", "sqlite_autoindex_jobs_1"],
        "the job indexes"
    );
    for (what, sql) in [
        ("job listing", crate::jobs_read::LIST_JOBS),
        ("claim candidates", crate::claim::CANDIDATES),
        ("settling", crate::settle::JOB_AND_STEPS),
    ] {
        let p = plan(&conn, sql);
        assert!(!p.iter().any(|d| d == "SCAN jobs" || d == "SCAN j"), "{what}: scans the jobs table: {p:?}");
    }
}
