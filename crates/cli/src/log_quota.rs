//! The server's total log quota: `--log-quota` when given, else a quarter of the space
//! logs could use when the server starts (free space on the database's filesystem plus
//! the logs already stored). Chooses the number only; the store enforces it.

use anyhow::{Context, Result};
use std::path::Path;

/// Share of the usable space the default quota takes, in percent.
pub(crate) const DEFAULT_SHARE_PERCENT: u64 = 25;

/// The quota in force and where it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogQuota {
    pub(crate) bytes: u64,
    /// True when it was derived from the free space (no `--log-quota`).
    pub(crate) derived: bool,
}

impl LogQuota {
    /// `given`, else [`DEFAULT_SHARE_PERCENT`] of the space free (to unprivileged users) on
    /// the filesystem holding `dir` plus the `stored` log bytes, at least 1 MiB. Counting
    /// the stored logs (space the quota may reuse) keeps the default from shrinking at
    /// every restart as logs fill the disk.
    pub(crate) fn choose(given: Option<u64>, dir: &Path, stored: u64) -> Result<LogQuota> {
        if let Some(bytes) = given {
            return Ok(LogQuota { bytes, derived: false });
        }
        let st = rustix::fs::statvfs(dir).with_context(|| {
            format!("cannot read the free space of {} (for the log quota)", dir.display())
        })?;
        let usable = st.f_bavail.saturating_mul(st.f_frsize).saturating_add(stored);
        Ok(LogQuota { bytes: (usable / 100 * DEFAULT_SHARE_PERCENT).max(1 << 20), derived: true })
    }

    /// For the start-up lines: `2.0 GiB (25% of the free space on DIR at start, …)`.
    pub(crate) fn describe(&self, dir: &Path) -> String {
        let size = crate::output::size_text(self.bytes);
        if self.derived {
            format!(
                "{size} ({DEFAULT_SHARE_PERCENT}% of the free space on {} at start, counting the logs \
                 already stored; --log-quota to change)",
                dir.display()
            )
        } else {
            format!("{size} (--log-quota)")
        }
    }
}
