//! Exponential backoff with jitter for retrying an unreachable server. It only computes
//! delays; callers sleep (cancellably) themselves.

use rand::Rng;
use std::time::Duration;

/// Doubling delays from `min` to `max`, each randomized to 50–100 % of its nominal value
/// so a fleet does not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`, capped at `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The usual schedule for server calls: 200 ms doubling to 10 s.
    pub(crate) fn server() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The next delay to wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        nominal.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Back to the shortest delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// True when at least one failure happened since the last reset.
    pub(crate) fn is_failing(&self) -> bool {
        self.next > self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::server();
        let mut nominal = Duration::from_millis(200);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            nominal = (nominal * 2).min(Duration::from_secs(10));
        }
        assert!(b.is_failing());
        b.reset();
        assert!(!b.is_failing());
        assert!(b.next_delay() <= Duration::from_millis(200));
    }
}
