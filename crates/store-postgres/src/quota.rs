//! The total log quota's pruning: which finished jobs' logs go first (oldest finished
//! first) and deleting them while recording what each attempt lost. Refusing new chunks
//! once nothing is left to prune is `logs::append_one`'s part.

use crate::codec::u64_of;
use crate::error::Result;
use crate::tx::{Tx, exec, rows};
use uuid::Uuid;

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
pub(crate) async fn choose(tx: &Tx<'_>, need: u64) -> Result<Vec<(Uuid, u64)>> {
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
pub(crate) async fn prune_jobs(tx: &Tx<'_>, ids: &[Uuid]) -> Result<()> {
    exec(tx, RECORD_PRUNED, &[&ids]).await?;
    exec(tx, DELETE_CHUNKS, &[&ids]).await?;
    Ok(())
}
