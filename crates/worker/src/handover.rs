//! The slot a finished step hands to its result (protocol minor 2): instead of being
//! freed, it travels with the result to `report.rs`, whose completion asks the server to
//! claim for it; a claimed step then starts in it. Counted busy for the claim loop
//! (`FleetState::hand_over`) until it holds a new step or is freed by being dropped. It
//! owns that counting only; it never claims or starts anything.

use crate::context::Ctx;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// A slot kept for a result's claim. Dropped: free again (the claim loop takes over).
pub(crate) struct HandedSlot {
    permit: Option<OwnedSemaphorePermit>,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for HandedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedSlot").finish_non_exhaustive()
    }
}

impl HandedSlot {
    /// Keeps `permit` for the result of the step that held it (counted by the caller with
    /// `FleetState::hand_over`).
    pub(crate) fn new(ctx: Arc<Ctx>, permit: OwnedSemaphorePermit) -> Self {
        Self { permit: Some(permit), ctx }
    }

    /// The slot, for a step just claimed for it (already counted in flight).
    pub(crate) fn into_slot(mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }
}

impl Drop for HandedSlot {
    fn drop(&mut self) {
        // The permit is released after the count, so a claim that gets it sees the count.
        self.ctx.fleet.handed_back();
        drop(self.permit.take());
    }
}
