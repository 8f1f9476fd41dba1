//! Storing submitted jobs, with the hand-off to waiting workers: the submit claims for the
//! claim long-polls parked on the server (as many as its new steps need) in its own durable
//! commit and hands them their steps, so an idle worker starts a job one transaction and
//! one wake-up sooner. Only claimers whose session was heard from lately are taken
//! (`liveness.rs`). Must not decide what a claim may take: that is the store's claim.

use crate::error::ApiError;
use crate::parking::Parked;
use crate::state::AppState;
use rota_store::{NewJob, Submitted};

/// Stores `jobs` (durably, like `JobStore::submit_jobs`) and hands parked claimers what
/// the same commit claimed for them. The caller still wakes the other claimers.
pub(crate) async fn submit_jobs(
    state: &AppState,
    mut jobs: Vec<NewJob>,
) -> Result<Vec<rota_store::Result<Submitted>>, ApiError> {
    // Every way a job is made (submit, workflow run, schedule) routes its project here.
    for j in &mut jobs {
        j.spec.route_project();
    }
    let roots: usize = jobs.iter().map(|j| j.spec.steps.iter().filter(|s| s.needs.is_empty()).count()).sum();
    // Only sessions heard from lately: a worker whose link was cut still has its claim
    // parked here, and what it took would be lost again at its lease's end.
    let now = tokio::time::Instant::now();
    let parked =
        state.parking.take_for(roots, |session, arrived| state.liveness.fresh(session, arrived, now));
    if parked.is_empty() {
        return Ok(state.store.submit_jobs(jobs).await?);
    }
    let claimers = parked.iter().map(Parked::claimer).collect();
    // On an error the parked claimers are dropped here: their long-polls see the closed
    // channel and look again by themselves.
    let out = state.store.submit_and_claim(jobs, claimers, state.store.now(), state.config.lease_ttl).await?;
    let mut handed = 0u64;
    for (p, claimed) in parked.into_iter().zip(out.claimed) {
        let session = p.claimer().session;
        let attempts = claimed.unwrap_or_else(|e| {
            // Typically a session that ended while parked; its long-poll looks again and
            // gets the answer a claim gives.
            tracing::debug!(%session, "claim for a waiting worker refused: {e}");
            Vec::new()
        });
        let n = attempts.len() as u64;
        if p.hand(attempts) {
            handed += n;
        } else if n > 0 {
            tracing::warn!(%session, attempts = n,
                "a waiting claim went away as its steps were claimed; they run again when their leases expire");
        }
    }
    state.metrics.handed_at_submit(handed);
    Ok(out.submitted)
}
