//! Claim long-polls waiting for work, so a submit can claim for them inside its own durable
//! commit (`JobStore::submit_and_claim`) and hand them their steps with its reply, instead of
//! waking them to run a claim transaction of their own after it. Owns only the waiting
//! list; what a claim may take is decided by the store, as for any claim.
//!
//! A claimer leaves the list when its long-poll wakes, times out or is dropped (the
//! [`Ticket`] guard). If a submit took it first, its steps are on the way and it must wait
//! for them: [`Ticket::leave`] says which. A submit passes over claimers the caller says
//! are not usable (their session was not heard from lately, `liveness.rs`): they stay
//! listed, and their long-poll ends empty when it next looks (`routes/worker.rs::claim`).

use rota_domain::SessionId;
use rota_store::{ClaimedAttempt, Claimer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One waiting claim long-poll.
pub(crate) struct Parked {
    ticket: u64,
    claimer: Claimer,
    /// When the claim request arrived (not when it parked: it may park several times).
    arrived: Instant,
    reply: oneshot::Sender<Vec<ClaimedAttempt>>,
}

impl Parked {
    pub(crate) fn claimer(&self) -> Claimer {
        self.claimer
    }

    /// Hands the claimer what was claimed for it. False if it is gone: its request was
    /// dropped after a submit took it, so the attempts stay leased to a session that never
    /// saw them and run again when their leases expire, as with a claim reply lost on the
    /// wire.
    pub(crate) fn hand(self, attempts: Vec<ClaimedAttempt>) -> bool {
        self.reply.send(attempts).is_ok()
    }
}

/// The claim long-polls waiting for work, oldest first.
#[derive(Default)]
pub(crate) struct Parking {
    next: AtomicU64,
    waiting: Mutex<Vec<Parked>>,
}

impl Parking {
    fn lock(&self) -> MutexGuard<'_, Vec<Parked>> {
        // The list stays consistent under a panic elsewhere: every change is one push/retain.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks a claimer whose request arrived at `arrived`; its steps arrive on the receiver
    /// if a submit takes it.
    pub(crate) fn park(
        self: &Arc<Self>,
        session: SessionId,
        max: u32,
        arrived: Instant,
    ) -> (Ticket, oneshot::Receiver<Vec<ClaimedAttempt>>) {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.lock().push(Parked { ticket, claimer: Claimer { session, max }, arrived, reply });
        (Ticket { parking: self.clone(), ticket, left: false }, rx)
    }

    /// Takes the oldest claimers still listening, and `usable(session, arrived)`, until
    /// their slots add up to `steps`: a submit of one job takes one idle worker, not every
    /// one. Claimers passed over stay listed.
    pub(crate) fn take_for(&self, steps: usize, usable: impl Fn(SessionId, Instant) -> bool) -> Vec<Parked> {
        let mut waiting = self.lock();
        waiting.retain(|p| !p.reply.is_closed());
        let mut slots = 0usize;
        let mut taken = Vec::new();
        let mut i = 0;
        while i < waiting.len() && slots < steps {
            let p = &waiting[i];
            if usable(p.claimer.session, p.arrived) {
                slots += p.claimer.max as usize;
                taken.push(waiting.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    }

    /// Removes `ticket`; false if a submit took it first.
    fn remove(&self, ticket: u64) -> bool {
        let mut waiting = self.lock();
        let before = waiting.len();
        waiting.retain(|p| p.ticket != ticket);
        waiting.len() != before
    }
}

/// A parked claimer's place in the list; leaves it when dropped.
pub(crate) struct Ticket {
    parking: Arc<Parking>,
    ticket: u64,
    left: bool,
}

impl Ticket {
    /// Leaves the list. True if the claimer was still waiting; false if a submit took it,
    /// in which case its steps will arrive on its receiver.
    pub(crate) fn leave(mut self) -> bool {
        self.left = true;
        self.parking.remove(self.ticket)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.left {
            self.parking.remove(self.ticket);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_submit_takes_the_oldest_claimers_its_steps_need_and_leaving_says_who_was_taken() {
        let p = Arc::new(Parking::default());
        let now = Instant::now();
        let (t1, _r1) = p.park(SessionId::new(), 2, now);
        let (t2, _r2) = p.park(SessionId::new(), 2, now);
        let (t3, mut r3) = p.park(SessionId::new(), 2, now);
        let taken = p.take_for(3, any);
        assert_eq!(taken.len(), 2, "two claimers of 2 slots cover 3 steps");
        assert!(!t1.leave() && !t2.leave(), "taken claimers must wait for their steps");
        assert!(taken.into_iter().all(|t| t.hand(Vec::new())));
        assert!(r3.try_recv().is_err(), "the third was not taken");
        assert!(t3.leave(), "still waiting, so it leaves");
        assert!(p.take_for(1, any).is_empty());
    }

    fn any(_: SessionId, _: Instant) -> bool {
        true
    }

    #[test]
    fn claimers_that_are_not_usable_are_passed_over_and_stay_listed() {
        let p = Arc::new(Parking::default());
        let now = Instant::now();
        let (silent, fresh) = (SessionId::new(), SessionId::new());
        let (t1, mut r1) = p.park(silent, 1, now);
        let (t2, _r2) = p.park(fresh, 1, now);
        let taken = p.take_for(1, |s, _| s != silent);
        assert_eq!(taken.iter().map(|t| t.claimer().session).collect::<Vec<_>>(), [fresh]);
        assert!(!t2.leave());
        assert!(r1.try_recv().is_err(), "the silent claimer got nothing");
        assert!(p.take_for(1, |s, _| s != silent).is_empty(), "and is never taken while silent");
        assert!(t1.leave(), "it is still listed, so its long-poll leaves by itself");
        drop(taken);
    }

    #[test]
    fn dropped_claimers_are_never_taken() {
        let p = Arc::new(Parking::default());
        let (t1, r1) = p.park(SessionId::new(), 1, Instant::now());
        drop(r1); // the request went away but its guard has not run yet
        let (t2, r2) = p.park(SessionId::new(), 1, Instant::now());
        drop(t2); // the guard ran
        assert!(p.take_for(5, any).is_empty(), "closed and left claimers are skipped");
        drop((t1, r2));
    }
}
