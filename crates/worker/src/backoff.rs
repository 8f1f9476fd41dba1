//! Exponential backoff with jitter: the worker's retries of an unreachable server and the
//! supervisor's restarts of a crashed worker. It only computes delays; callers sleep
//! (cancellably) themselves.

use rand::Rng;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Doubling delays from `min` to `max`, each multiplied by a random factor from the
/// jitter range (50–100 % unless set) so a fleet does not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: RangeInclusive<f64>,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `min`, capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, jitter: 0.5..=1.0, failures: 0 }
    }

    /// The usual schedule for server calls: 200 ms doubling to 10 s.
    pub fn server() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The same schedule with each delay multiplied by a factor from `jitter` instead
    /// (the cap applies before the factor).
    pub fn with_jitter(self, jitter: RangeInclusive<f64>) -> Self {
        Self { jitter, ..self }
    }

    /// The delay after the `n`-th consecutive failure (1 is the first): `min·2ⁿ⁻¹`, capped,
    /// then jittered. Does not change the state.
    pub fn delay_after(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(16);
        let nominal = self.min.saturating_mul(1 << exp).min(self.max);
        nominal.mul_f64(rand::rng().random_range(self.jitter.clone()))
    }

    /// The next delay to wait (counts a failure).
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay_after(self.failures)
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// True when at least one failure happened since the last reset.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
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

    #[test]
    fn the_nth_delay_is_capped_before_its_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.9..=1.1);
        let within = |d: Duration, ms: u64| {
            d >= Duration::from_millis(ms).mul_f64(0.9) && d <= Duration::from_millis(ms).mul_f64(1.1)
        };
        for _ in 0..20 {
            assert!(within(b.delay_after(0), 100), "0 counts as the first failure");
            assert!(within(b.delay_after(4), 800));
            assert!(within(b.delay_after(40), 1000), "capped at 1 s, then jittered");
        }
    }
}
