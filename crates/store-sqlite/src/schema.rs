//! Opening connections and migrating both database files. Owns the PRAGMAs and the
//! `schema_migrations` bookkeeping; it must not query the job or log tables.

use crate::error::{Result, SqliteError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// One embedded migration.
pub(crate) struct Migration {
    /// Increasing from 1.
    pub(crate) version: i64,
    /// Its file name without the number.
    pub(crate) name: &'static str,
    /// The SQL, run in one transaction.
    pub(crate) sql: &'static str,
    /// It rebuilds tables others point at (SQLite's way to change a constraint): foreign
    /// keys are off while it runs (a `DROP TABLE` would otherwise cascade) and checked
    /// before it commits; the rows it rewrites are counted and reported first.
    pub(crate) rebuilds: &'static [&'static str],
}

/// Migrations of the main database (jobs, steps, attempts, workers).
pub(crate) const MAIN: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/main/0001_init.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 2,
        name: "fleet",
        sql: include_str!("../migrations/main/0002_fleet.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 3,
        name: "partial_indexes",
        sql: include_str!("../migrations/main/0003_partial_indexes.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 4,
        name: "worker_instance",
        sql: include_str!("../migrations/main/0004_worker_instance.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 5,
        name: "key_revokes",
        sql: include_str!("../migrations/main/0005_key_revokes.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 6,
        name: "credentials",
        sql: include_str!("../migrations/main/0006_credentials.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 7,
        name: "resources",
        sql: include_str!("../migrations/main/0007_resources.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 8,
        name: "outputs",
        sql: include_str!("../migrations/main/0008_outputs.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 9,
        name: "schedules",
        sql: include_str!("../migrations/main/0009_schedules.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 10,
        name: "namespaces",
        sql: include_str!("../migrations/main/0010_namespaces.sql"),
        rebuilds: &["jobs", "paused_queues", "key_revokes", "schedule_fires"],
    },
    Migration {
        version: 11,
        name: "secrets",
        sql: include_str!("../migrations/main/0011_secrets.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 12,
        name: "forget",
        sql: include_str!("../migrations/main/0012_forget.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 13,
        name: "unused_job_indexes",
        sql: include_str!("../migrations/main/0013_unused_job_indexes.sql"),
        rebuilds: &[],
    },
];

/// Migrations of the logs database.
pub(crate) const LOGS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/logs/0001_init.sql"),
        rebuilds: &[],
    },
    Migration {
        version: 2,
        name: "quota",
        sql: include_str!("../migrations/logs/0002_quota.sql"),
        rebuilds: &[],
    },
];

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)";
const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)";

/// Opens (creating if needed) the read-write connection a writer thread will own: WAL,
/// `synchronous=NORMAL` (raised per batch when a write must be durable), foreign keys on.
pub(crate) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::Corrupt(format!(
            "{}: cannot switch to WAL journal mode (got '{mode}')",
            path.display()
        ))
        .into());
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    stable_plans(&conn)?;
    // Bounded disk: after a checkpoint the WAL is truncated back to at most this size.
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    Ok(conn)
}

/// Opens a read-only connection for the reader pool.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    stable_plans(&conn)?;
    Ok(conn)
}

/// Query plans that do not depend on bound values. Without it SQLite recompiles a cached
/// statement on the first step after a parameter it looked at gets a new value (a bound
/// `LIMIT`, or `WHERE job_id = ?` on `steps`): that re-parse and re-plan was ~15% of the
/// server's CPU in a shell burn-down. rota runs no ANALYZE, so nothing is lost.
/// The statement cache also holds every statement of the hot paths (claim, complete,
/// heartbeat, logs and the transaction control), which rusqlite's default of 16 did not.
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// Applies the migrations `conn` has not seen, each in its own transaction. Refuses a
/// database whose schema is newer than `set` knows.
pub(crate) fn migrate(conn: &mut Connection, set: &[Migration], path: &Path) -> Result<()> {
    conn.execute_batch(CREATE_MIGRATIONS)?;
    let known = set.last().map_or(0, |m| m.version);
    let found: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0))?;
    if found > known {
        return Err(SqliteError::SchemaTooNew { path: path.display().to_string(), found, known }.into());
    }
    for m in set.iter().filter(|m| m.version > found) {
        if m.rebuilds.is_empty() {
            apply(conn, m, path)?;
            continue;
        }
        // PRAGMA foreign_keys is a no-op inside a transaction: it is switched around it.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let applied = apply(conn, m, path);
        conn.pragma_update(None, "foreign_keys", "ON")?;
        applied?;
    }
    Ok(())
}

/// Applies one migration in its own immediate transaction, unless another process applied
/// it while this one waited for the write lock.
fn apply(conn: &mut Connection, m: &Migration, path: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_found: i64 = tx.query_row(CURRENT_VERSION, [], |r| r.get(0))?;
    if now_found >= m.version {
        return Ok(());
    }
    let mut rows = 0i64;
    for table in m.rebuilds {
        // Names come from the embedded list above, never from input.
        rows += tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))?;
    }
    if rows >= REPORT_ROWS {
        tracing::info!(
            db = %path.display(), version = m.version, name = m.name, rows,
            "migrating the store: rewriting {rows} rows of {}; this can take a while, do not stop the server",
            m.rebuilds.join(", ")
        );
    }
    tx.execute_batch(m.sql)?;
    if !m.rebuilds.is_empty() {
        let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
        if broken > 0 {
            return Err(SqliteError::Corrupt(format!(
                "{}: migration {} ({}) would leave {broken} rows pointing at nothing; nothing was changed",
                path.display(),
                m.version,
                m.name
            ))
            .into());
        }
    }
    tx.execute(RECORD_MIGRATION, (m.version, m.name, chrono::Utc::now().timestamp_millis()))?;
    tx.commit()?;
    if rows >= REPORT_ROWS {
        tracing::info!(db = %path.display(), version = m.version, rows, took_ms = started.elapsed().as_millis() as u64, "store migrated");
    }
    tracing::debug!(db = %path.display(), version = m.version, name = m.name, "applied migration");
    Ok(())
}

/// A migration rewriting at least this many rows says so before and after: on a large
/// store it takes long enough that a silent server looks hung.
const REPORT_ROWS: i64 = 10_000;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for set in [MAIN, LOGS] {
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
    }

    /// Migration 5 (key revokes) on a database at schema 4, as the previous release wrote
    /// it: its job revokes (also of ids never issued, which it stored) and jobs are kept,
    /// and key revokes work.
    #[tokio::test]
    async fn migration_5_keeps_what_schema_4_wrote() {
        use rota_store::{JobStore, KeyRevokeRequest};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        {
            let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, &MAIN[..4], &path).unwrap();
            // Rows as the previous release's fleet.rs and submit.rs wrote them.
            let old_revoke = rota_domain::JobId::new().to_string();
            conn.execute(
                "INSERT INTO revokes (job_id, terminate, signal, expires_at, created_at) VALUES (?1, 1, 9, NULL, 1000)",
                [&old_revoke],
            )
            .unwrap();
            let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
            assert_eq!(version, 4);
        }
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();
        let now = chrono::Utc::now();
        let kept = store.list_revokes(now).await.unwrap();
        assert_eq!(kept.len(), 1, "the job revoke written at schema 4 is kept");
        assert_eq!((kept[0].terminate, kept[0].signal), (true, Some(9)));
        let out = store
            .revoke_keys(
                vec![KeyRevokeRequest {
                    namespace: "default".into(),
                    key: "k1".into(),
                    terminate: false,
                    signal: None,
                    expires_at: None,
                }],
                now,
            )
            .await
            .unwrap();
        assert!(out[0].is_ok(), "{out:?}");
        assert_eq!(store.list_key_revokes(now).await.unwrap().len(), 1);
        drop(store);
        let conn = open_reader(&path, Duration::from_secs(1)).unwrap();
        let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
        assert_eq!(Some(version), MAIN.last().map(|m| m.version), "migrated to the newest schema");
    }

    /// Migration 6 (credentials) on a database at schema 5, as the previous release wrote
    /// it: its worker sessions still authenticate, its key revokes are kept, it holds no
    /// admin or join hash (those tokens lived only in files), and the first start's hashes
    /// are stored once.
    #[tokio::test]
    async fn migration_6_keeps_what_schema_5_wrote() {
        use rota_store::{CredentialHashes, JobStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let session = rota_domain::SessionId::new();
        {
            let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, &MAIN[..5], &path).unwrap();
            // Rows as the previous release's workers.rs and fleet.rs wrote them.
            conn.execute(
                "INSERT INTO workers (session, name, token_hash, host, profile, version, queues, tags, \
                 concurrency, status, pid, registered_at, last_heartbeat_at, instance_id) \
                 VALUES (?1, 'w1', 'cafe', 'h', NULL, '0.1.0', '[\"default\"]', '[]', 2, 'active', 7, 1000, 1000, 'i1')",
                [session.to_string()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO key_revokes (idempotency_key, terminate, signal, expires_at, created_at) \
                 VALUES ('k1', 0, NULL, NULL, 1000)",
                [],
            )
            .unwrap();
            let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
            assert_eq!(version, 5);
        }
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();
        let w = store.session_by_token("cafe").await.unwrap().expect("the old session still authenticates");
        assert_eq!((w.session, w.name.as_str()), (session, "w1"));
        let now = chrono::Utc::now();
        assert_eq!(store.list_key_revokes(now).await.unwrap().len(), 1, "the key revoke is kept");
        assert_eq!(store.credential_hashes().await.unwrap(), CredentialHashes::default());
        let from_files =
            CredentialHashes { admin: Some("aa".into()), join: Some("bb".into()), previous: vec![] };
        assert_eq!(store.init_credentials(&from_files, now).await.unwrap(), from_files);
        drop(store);
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();
        assert_eq!(store.credential_hashes().await.unwrap(), from_files, "stored durably");
        drop(store);
        let conn = open_reader(&path, Duration::from_secs(1)).unwrap();
        let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
        assert_eq!(Some(version), MAIN.last().map(|m| m.version), "migrated to the newest schema");
    }

    /// Migrations 7 (resources) and 8 (attempt outputs) on a database at schema 6, as the
    /// previous release wrote it: its finished job reads back with no outputs, its
    /// succeeded step's dependents get none, and resources can be applied at once.
    #[tokio::test]
    async fn migrations_7_and_8_keep_what_schema_6_wrote() {
        use rota_store::JobStore;
        use rota_store::resources::{ResourceKey, ResourceWrite};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let (job, session) = (rota_domain::JobId::new(), rota_domain::SessionId::new());
        let spec = rota_domain::JobSpec::new(vec![rota_domain::StepSpec::new("a", "true")]);
        {
            let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, &MAIN[..6], &path).unwrap();
            // Rows as the previous release's submit.rs, claim.rs and complete.rs wrote them.
            conn.execute(
                "INSERT INTO jobs (id, name, queue, priority, target_host, target_tags, env, idempotency_key, \
                 deadline, spec, state, created_at, finished_at) \
                 VALUES (?1, NULL, 'default', 0, NULL, '[]', '{}', NULL, NULL, ?2, 'succeeded', 1000, 2000)",
                (job.to_string(), serde_json::to_string(&spec).unwrap()),
            )
            .unwrap();
            conn.execute(
                "INSERT INTO steps (job_id, idx, name, state, log_cap, queue, priority, target_host, target_tags, \
                 attempts_count) VALUES (?1, 0, 'a', 'succeeded', 1024, 'default', 0, NULL, '[]', 1)",
                [job.to_string()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO attempts (job_id, step, number, session, worker_name, status, outcome, reason, \
                 started_at, finished_at) VALUES (?1, 'a', 1, ?2, 'w1', 'succeeded', '{\"status\":\"succeeded\"}', NULL, \
                 1000, 2000)",
                (job.to_string(), session.to_string()),
            )
            .unwrap();
        }
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();
        let rec = store.get_job(job).await.unwrap();
        let a = &rec.steps[0].attempts[0];
        assert_eq!((a.status, a.outputs.len()), (rota_domain::AttemptStatus::Succeeded, 0));
        let w = ResourceWrite {
            kind: rota_domain::resource::Kind::Workflow,
            metadata: rota_domain::resource::Metadata {
                name: "w".into(),
                namespace: "default".into(),
                labels: Default::default(),
            },
            spec: "{}".into(),
        };
        store.apply_resources(vec![w], chrono::Utc::now()).await.unwrap();
        let key = ResourceKey::new("default", rota_domain::resource::Kind::Workflow, "w");
        assert_eq!(store.get_resource(&key).await.unwrap().map(|r| r.generation), Some(1));
        drop(store);
        let conn = open_reader(&path, Duration::from_secs(1)).unwrap();
        let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
        assert_eq!(Some(version), MAIN.last().map(|m| m.version), "migrated to the newest schema");
    }

    /// Migration 13 (unused job indexes) on a database at schema 12, as the previous release
    /// wrote it: its jobs list by state, queue and namespace as before, a queued one is
    /// claimed and completed, and the three indexes are gone.
    #[tokio::test]
    async fn migration_13_keeps_what_schema_12_wrote() {
        use rota_store::{Completion, JobFilter, JobStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let (done, queued) = (rota_domain::JobId::new(), rota_domain::JobId::new());
        let spec = rota_domain::JobSpec::new(vec![rota_domain::StepSpec::new("a", "true")]);
        {
            let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
            migrate(&mut conn, &MAIN[..12], &path).unwrap();
            // Rows as the previous release's submit.rs and settle.rs wrote them.
            for (id, state, finished, step_state) in
                [(done, "succeeded", Some(2000i64), "succeeded"), (queued, "queued", None, "ready")]
            {
                conn.execute(
                    "INSERT INTO jobs (id, name, queue, priority, target_host, target_tags, env, idempotency_key, \
                     deadline, spec, state, created_at, finished_at, namespace) \
                     VALUES (?1, NULL, 'q1', 0, NULL, '[]', '{}', NULL, NULL, ?2, ?3, 1000, ?4, 'default')",
                    (id.to_string(), serde_json::to_string(&spec).unwrap(), state, finished),
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO steps (job_id, idx, name, state, log_cap, queue, priority, target_host, target_tags, \
                     namespace) VALUES (?1, 0, 'a', ?2, NULL, 'q1', 0, NULL, '[]', 'default')",
                    (id.to_string(), step_state),
                )
                .unwrap();
            }
            let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
            assert_eq!(version, 12);
        }
        let store = crate::SqliteStore::open(&path, crate::SqliteOptions::default()).unwrap();
        let list = |states: Vec<rota_domain::JobState>| JobFilter {
            states,
            queue: Some("q1".into()),
            namespace: Some("default".into()),
            ..JobFilter::default()
        };
        let ids = |rows: Vec<rota_store::JobRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list_jobs(&list(vec![])).await.unwrap()), [queued, done], "newest first");
        let finished = store.list_jobs(&list(vec![rota_domain::JobState::Succeeded])).await.unwrap();
        assert_eq!(ids(finished), [done]);
        let now = chrono::Utc::now();
        let session = rota_domain::SessionId::new();
        let reg = rota_store::WorkerRegistration {
            session,
            namespace: "default".into(),
            token_hash: "hash".into(),
            name: "w1".into(),
            host: "h1".into(),
            profile: None,
            version: "test".into(),
            queues: vec!["q1".into()],
            tags: vec![],
            concurrency: 4,
            pid: None,
            instance_id: None,
            replace: false,
            stale_after: Duration::from_secs(30),
        };
        store.register_worker(reg, now).await.unwrap();
        let claimed = store.claim(session, 4, now, Duration::from_secs(30)).await.unwrap();
        assert_eq!(claimed.iter().map(|c| c.job_id).collect::<Vec<_>>(), [queued]);
        let c = &claimed[0];
        let recorded = store
            .complete(
                vec![Completion {
                    outputs: Default::default(),
                    session,
                    job_id: c.job_id,
                    step: c.step.clone(),
                    attempt_id: c.attempt_id,
                    outcome: rota_domain::AttemptOutcome::Succeeded,
                    run_ms: None,
                    jitter01: 0.5,
                }],
                now,
            )
            .await
            .unwrap();
        assert_eq!(recorded[0].as_ref().unwrap().job_state, Some(rota_domain::JobState::Succeeded));
        let running = store.list_jobs(&list(vec![rota_domain::JobState::Queued])).await.unwrap();
        assert!(running.is_empty(), "{running:?}");
        drop(store);
        let conn = open_reader(&path, Duration::from_secs(1)).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('jobs_state', 'jobs_queue', 'jobs_namespace')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the unused indexes are gone");
        let version: i64 = conn.query_row(CURRENT_VERSION, [], |r| r.get(0)).unwrap();
        assert_eq!(Some(version), MAIN.last().map(|m| m.version), "migrated to the newest schema");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut conn = open_writer(&path, Duration::from_secs(1)).unwrap();
        migrate(&mut conn, MAIN, &path).unwrap();
        migrate(&mut conn, MAIN, &path).unwrap();
        conn.execute(RECORD_MIGRATION, (99, "future", 0)).unwrap();
        let err = migrate(&mut conn, MAIN, &path).unwrap_err();
        let text = rota_store::StoreError::from(err).to_string();
        assert!(text.contains("schema version 99") && text.contains("upgrade rota"), "{text}");
    }
}
