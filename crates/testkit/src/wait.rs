//! Polling with bounds, sync and async: a condition, a file a step writes. Every wait
//! panics naming what it waited for once its bound passes.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `cond` every 100 ms until true; panics with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the async `cond` every 50 ms until it holds; panics with `what` after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a file that a step writes, waiting until it exists and is not empty; its trimmed
/// text.
pub fn wait_file(path: &Path, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s.trim().to_string();
        }
        assert!(start.elapsed() < within, "{} did not appear within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a file exists (a step's "I have started" marker).
pub fn wait_file_exists(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < within, "{} did not appear within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
