//! The embedded, versioned migrations and their bookkeeping (`schema_migrations`). Servers
//! starting together migrate under one transaction-scoped advisory lock, so a migration is
//! applied once. A database migrated by a newer rota is accepted while its newest migration
//! says it is compatible with this build's schema (`min_compatible`: additive changes),
//! refused otherwise. Must not query the job or log tables.

use crate::error::{PgError, Result};
use tokio_postgres::Client;

/// One embedded migration.
pub(crate) struct Migration {
    /// Increasing from 1.
    pub(crate) version: i64,
    /// Its file name without the number.
    pub(crate) name: &'static str,
    /// The oldest schema version whose code still works once this one is applied: its own
    /// version unless it only adds what older code can ignore.
    pub(crate) min_compatible: i64,
    /// The SQL, run in the migrating transaction.
    pub(crate) sql: &'static str,
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        min_compatible: 1,
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "resources",
        min_compatible: 1,
        sql: include_str!("../migrations/0002_resources.sql"),
    },
    Migration {
        version: 3,
        name: "outputs",
        min_compatible: 1,
        sql: include_str!("../migrations/0003_outputs.sql"),
    },
    Migration {
        version: 4,
        name: "schedules",
        min_compatible: 1,
        sql: include_str!("../migrations/0004_schedules.sql"),
    },
    Migration {
        version: 5,
        name: "namespaces",
        // Older servers look idempotency keys and worker names up across namespaces.
        min_compatible: 5,
        sql: include_str!("../migrations/0005_namespaces.sql"),
    },
    Migration {
        version: 6,
        name: "secrets",
        min_compatible: 5,
        sql: include_str!("../migrations/0006_secrets.sql"),
    },
    Migration {
        version: 7,
        name: "forget",
        min_compatible: 5,
        sql: include_str!("../migrations/0007_forget.sql"),
    },
];

/// The advisory lock key migrations run under (an arbitrary constant: "rota" + 1).
const MIGRATION_LOCK: i64 = 0x726f_7461_0001;

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version bigint PRIMARY KEY, name text NOT NULL, min_compatible bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";
const NEWEST: &str = "SELECT version, min_compatible FROM schema_migrations ORDER BY version DESC LIMIT 1";
const RECORD: &str = "INSERT INTO schema_migrations (version, name, min_compatible) VALUES ($1, $2, $3)";

/// Applies the migrations the database has not seen, in one transaction under the
/// migration lock. Returns how many were applied. Refuses an incompatible newer schema.
pub(crate) async fn migrate(client: &mut Client, set: &[Migration]) -> Result<usize> {
    let tx = client.transaction().await?;
    // Held until COMMIT: a second server waits here, then sees the first one's work.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    // Without the "already exists, skipping" notice of every start after the first.
    tx.batch_execute("SET LOCAL client_min_messages = warning").await?;
    tx.batch_execute(CREATE_MIGRATIONS).await?;
    let known = set.last().map_or(0, |m| m.version);
    let (found, min_compatible) = match tx.query_opt(NEWEST, &[]).await? {
        Some(r) => (r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?),
        None => (0, 0),
    };
    if found > known && min_compatible > known {
        return Err(PgError::SchemaTooNew { found, min_compatible, known }.into());
    }
    let mut applied = 0;
    for m in set.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await?;
        tx.execute(RECORD, &[&m.version, &m.name, &m.min_compatible]).await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

/// The newest version applied to the database (0 if none).
pub(crate) async fn current_version(client: &Client) -> Result<i64> {
    Ok(client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_compatible_with_themselves() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(m.min_compatible <= m.version, "{}", m.name);
        }
    }
}
