//! The total log quota: its counters, making room when it would be passed (deleting the
//! oldest finished jobs' logs first, recording what each attempt lost). Refusing new chunks
//! once nothing is left to prune is `logs::append_one`'s part. Live bytes are this
//! server's view: read from the database at connect, after pruning and every few seconds
//! (`JobStore::refresh_shared_views`), moved by its own appends in between; other servers'
//! appends show at the next refresh, so with several servers the quota can be passed by
//! what the others wrote within one refresh period, never more.

use crate::PgStore;
use crate::codec::u64_of;
use crate::error::Result;
use crate::tx::{Durability, Tx, exec, in_tx, rows};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// After the quota is reached, pruning frees down to this share of it (per mille).
const QUOTA_LOW_WATER_PERMILLE: u64 = 900;
/// A prune that found nothing to delete is not tried again sooner than this.
const QUOTA_RETRY: Duration = Duration::from_secs(1);
/// Jobs whose logs are deleted per transaction.
const PRUNE_CHUNK: usize = 2_000;

/// Finished jobs with live log bytes, oldest finished first, with their bytes.
const FINISHED_WITH_LOGS: &str = "SELECT l.job_id, SUM(l.bytes_kept)::bigint FROM log_attempts l \
     JOIN jobs j ON j.id = l.job_id \
     WHERE l.bytes_kept > 0 AND j.finished_at IS NOT NULL \
       AND j.state IN ('succeeded', 'failed', 'cancelled', 'revoked') \
     GROUP BY l.job_id, j.finished_at ORDER BY j.finished_at, l.job_id";

const RECORD_PRUNED: &str = "UPDATE log_attempts SET bytes_pruned = bytes_pruned + bytes_kept, bytes_kept = 0 \
     WHERE job_id = ANY($1) AND bytes_kept > 0 RETURNING bytes_pruned";

const DELETE_CHUNKS: &str = "DELETE FROM log_chunks WHERE job_id = ANY($1)";

/// The finished jobs whose logs to delete so that `need` bytes are freed, oldest first.
async fn choose(tx: &Tx<'_>, need: u64) -> Result<Vec<(Uuid, u64)>> {
    let mut chosen = Vec::new();
    let mut planned = 0u64;
    for r in rows(tx, FINISHED_WITH_LOGS, &[]).await? {
        if planned >= need {
            break;
        }
        let bytes = u64_of(r.try_get(1)?);
        planned += bytes;
        chosen.push((r.try_get(0)?, bytes));
    }
    Ok(chosen)
}

/// Deletes every chunk of the listed jobs, recording the bytes on their attempts
/// (`bytes_pruned`, shown with the job's logs).
async fn prune_jobs(tx: &Tx<'_>, ids: &[Uuid]) -> Result<()> {
    exec(tx, RECORD_PRUNED, &[&ids]).await?;
    exec(tx, DELETE_CHUNKS, &[&ids]).await?;
    Ok(())
}

/// The total log quota's counters. Live bytes are this server's view: read from the
/// database at connect and after pruning, moved by its own appends in between.
pub(crate) struct LogQuota {
    pub(crate) quota: Option<u64>,
    pub(crate) live: AtomicU64,
    pub(crate) pruned: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Held while pruning; remembers when a prune last found nothing to delete.
    pub(crate) pruning: tokio::sync::Mutex<Option<Instant>>,
}

impl LogQuota {
    /// No quota, nothing counted yet.
    pub(crate) fn new() -> Self {
        Self {
            quota: None,
            live: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            pruning: tokio::sync::Mutex::new(None),
        }
    }
}

impl PgStore {
    /// Sets the total log quota in live bytes (`None`, the default: unbounded), before the
    /// store is shared. Past it the oldest finished jobs' logs are deleted, then new output
    /// is refused; both are recorded per attempt.
    pub fn set_log_quota(&mut self, quota: Option<u64>) {
        self.quota.quota = quota;
    }

    /// Reads the live log bytes from the database.
    pub(crate) async fn refresh_live(&self) -> rota_store::Result<()> {
        let live: i64 = in_tx!(self, Durability::Read, |tx| crate::tx::one(&tx, crate::logs::LIVE, &[])
            .await?
            .try_get(0)?)?;
        self.quota.live.store(u64_of(live), Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the logs of the oldest finished jobs until `incoming` more bytes fit under
    /// the low-water mark, if the quota would otherwise be passed. Jobs still running keep
    /// theirs: once nothing finished is left, appends refuse new chunks instead.
    pub(crate) async fn make_room(&self, quota: u64, incoming: u64) -> rota_store::Result<()> {
        let fits = |live: u64| live.saturating_add(incoming) <= quota;
        if fits(self.quota.live.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let mut last_fruitless = self.quota.pruning.lock().await;
        self.refresh_live().await?;
        let live = self.quota.live.load(Ordering::Relaxed);
        if fits(live) || last_fruitless.is_some_and(|t: Instant| t.elapsed() < QUOTA_RETRY) {
            return Ok(());
        }
        let low_water = quota / 1000 * QUOTA_LOW_WATER_PERMILLE;
        let need = live.saturating_add(incoming).saturating_sub(low_water);
        let chosen = in_tx!(self, Durability::Relaxed, |tx| choose(&tx, need).await?)?;
        if chosen.is_empty() {
            *last_fruitless = Some(Instant::now());
            return Ok(());
        }
        *last_fruitless = None;
        let ids: Vec<uuid::Uuid> = chosen.iter().map(|c| c.0).collect();
        for chunk in ids.chunks(PRUNE_CHUNK) {
            in_tx!(self, Durability::Relaxed, |tx| prune_jobs(&tx, chunk).await?)?;
        }
        let before = live;
        self.refresh_live().await?;
        let freed = before.saturating_sub(self.quota.live.load(Ordering::Relaxed));
        self.quota.pruned.fetch_add(freed, Ordering::Relaxed);
        tracing::info!(
            jobs = chosen.len(),
            freed_bytes = freed,
            quota_bytes = quota,
            "log quota reached: deleted the logs of the oldest finished jobs"
        );
        Ok(())
    }
}
