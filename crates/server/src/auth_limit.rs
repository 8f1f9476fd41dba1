//! Slowing repeated authentication failures from one address: after `limit` (by default
//! [`MAX_FAILURES`], `ServerConfig::auth_failures_per_minute`) failed authentications within
//! one [`WINDOW`], every authenticated request from that address is
//! answered `429` with `Retry-After` until the window ends. Only failures count (a fleet of
//! workers behind one NAT authenticates successfully all day), and the threshold is generous
//! enough for a NAT of many misconfigured workers retrying with backoff. Each address is
//! logged once per window, never with the token. It neither checks tokens nor knows routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Failures one address may have within a window before it is slowed, by default: a worker
/// retrying a bad token with rota's backoff fails a few times a minute, so this is a
/// hundred of them.
pub(crate) const MAX_FAILURES: u32 = 300;
/// Addresses tracked at most; beyond it, windows that ended are dropped first and then the
/// map is cleared (an attacker spraying addresses would only reset the counts).
const MAX_ADDRESSES: usize = 16_384;

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    logged: bool,
}

/// Failure counts per address.
#[derive(Default)]
pub(crate) struct AuthFailures {
    by_addr: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthFailures {
    /// How long `addr` must wait, if it is slowed now.
    pub(crate) fn retry_after(&self, addr: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        let map = self.by_addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let w = map.get(&addr)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(w.started))?;
        (w.failures >= limit && !left.is_zero()).then_some(left)
    }

    /// Counts one failure of `addr`; logs once per window when it crosses the threshold.
    pub(crate) fn failed(&self, addr: IpAddr, limit: u32, now: Instant) {
        let mut map = self.by_addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let w = map.entry(addr).or_insert(Window { started: now, failures: 0, logged: false });
        if now.saturating_duration_since(w.started) >= WINDOW {
            *w = Window { started: now, failures: 0, logged: false };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures >= limit && !w.logged {
            w.logged = true;
            tracing::warn!(
                address = %addr,
                failures = w.failures,
                "repeated authentication failures from {addr}: answering 429 until this {}-second window ends",
                WINDOW.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_beyond_the_threshold_slow_an_address_for_the_rest_of_its_window() {
        let f = AuthFailures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let n = MAX_FAILURES;
        for _ in 0..n - 1 {
            f.failed(a, n, t0);
        }
        assert_eq!(f.retry_after(a, n, t0), None, "below the threshold");
        f.failed(a, n, t0);
        assert_eq!(f.retry_after(a, n, t0 + Duration::from_secs(20)), Some(Duration::from_secs(40)));
        assert_eq!(f.retry_after(b, n, t0), None, "another address is not slowed");
        assert_eq!(f.retry_after(a, n, t0 + WINDOW), None, "the window ended");
        f.failed(a, n, t0 + WINDOW);
        assert_eq!(f.retry_after(a, n, t0 + WINDOW), None, "a new window counts from zero");
    }
}
