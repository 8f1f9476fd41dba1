//! Keeps this server's cached views of a shared store fresh: every [`REFRESH_EVERY`] it asks
//! the store to re-read them (`JobStore::refresh_shared_views`: the database clock's offset,
//! the log quota's live bytes that other servers' appends move). Runs on every server,
//! leader or not; changes no job state.

use crate::state::AppState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the views are re-read: short against the log quota's other servers' appends
/// and clock drift, long against the queries' cost (one sum over the log table's attempts,
/// one clock read).
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
        match state.store.refresh_shared_views().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the store's shared views are fresh again");
            }
            Ok(()) => {}
            // Once per outage: the requests meanwhile say the rest.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot refresh the store's shared views (clock, log usage)");
            }
            Err(_) => {}
        }
    }
}
