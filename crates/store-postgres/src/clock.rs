//! The store's clock: the database server's, so every server of a control plane agrees on
//! lease expiry and deadlines. `JobStore::now` must be cheap (no I/O), so the offset of the
//! database's clock from this host's is measured once a connection is open, then again every
//! few seconds (`JobStore::refresh_shared_views`), half the round trip credited to the way
//! there, and kept here; reading it is one atomic load.

use crate::error::Result;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

/// The database clock's offset from this host's, in microseconds.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_us: AtomicI64,
}

impl Clock {
    /// Measures the offset on `client`.
    pub(crate) async fn measure(&self, client: &tokio_postgres::Client) -> Result<()> {
        let st = client.prepare("SELECT clock_timestamp()").await?;
        let before = Utc::now();
        let theirs: DateTime<Utc> = client.query_one(&st, &[]).await?.try_get(0)?;
        let after = Utc::now();
        let ours = before + (after - before) / 2;
        let offset = (theirs - ours).num_microseconds().unwrap_or(0);
        let before = self.offset_us.swap(offset, Ordering::Relaxed);
        // Said once when the clocks part, not at every re-measurement.
        if offset.abs() > 1_000_000 && before.abs() <= 1_000_000 {
            tracing::warn!(offset_ms = offset / 1000, "this host's clock differs from the database's");
        }
        Ok(())
    }

    /// The database's time now.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }
}
