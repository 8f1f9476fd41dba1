//! The server's total log quota: `--log-quota` when given, else a quarter of the space
//! free on the database's filesystem when the server starts. Chooses the number only;
//! the store enforces it.

use anyhow::{Context, Result};
use std::path::Path;

/// Share of the free space the default quota takes, in percent.
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
    /// the filesystem holding `dir`, at least 1 MiB.
    pub(crate) fn choose(given: Option<u64>, dir: &Path) -> Result<LogQuota> {
        if let Some(bytes) = given {
            return Ok(LogQuota { bytes, derived: false });
        }
        let st = rustix::fs::statvfs(dir).with_context(|| {
            format!("cannot read the free space of {} (for the log quota)", dir.display())
        })?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        Ok(LogQuota { bytes: (free / 100 * DEFAULT_SHARE_PERCENT).max(1 << 20), derived: true })
    }

    /// For the start-up lines: `2.0 GiB (25% of the free space on DIR at start)`.
    pub(crate) fn describe(&self, dir: &Path) -> String {
        let size = crate::output::size_text(self.bytes);
        if self.derived {
            format!(
                "{size} ({DEFAULT_SHARE_PERCENT}% of the free space on {} at start; --log-quota to change)",
                dir.display()
            )
        } else {
            format!("{size} (--log-quota)")
        }
    }
}
