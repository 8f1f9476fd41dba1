//! Size-based rotation of a background worker's (or server's) log, run by its supervisor:
//! past the size limit, `<log>` is copied to `<log>.1` (older copies move up to `.N`, the
//! oldest is dropped) and truncated in place. Must not reopen or rename the live file: the
//! supervisor and its worker write through inherited `O_APPEND` descriptors, which keep
//! writing at the new end of a truncated file but would follow a renamed one.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size limit of the live log (`ROTA_LOG_MAX_SIZE`, e.g. `10MiB`; `0` turns rotation off).
pub const MAX_SIZE_ENV: &str = "ROTA_LOG_MAX_SIZE";
/// Rotated copies kept (`ROTA_LOG_KEEP`).
pub const KEEP_ENV: &str = "ROTA_LOG_KEEP";
/// Default size limit: 10 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Default number of rotated copies: 3, so a log takes at most about 40 MiB.
pub const DEFAULT_KEEP: u32 = 3;
/// How often the size is checked (a `stat`, nothing more).
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// When and how much to rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the live log is larger than this (0: never).
    pub max_size: u64,
    /// Rotated copies kept (at least 1).
    pub keep: u32,
}

impl Rotation {
    /// From the supervisor's environment; a bad value is logged and the default used.
    pub fn from_env() -> Self {
        let max_size = match std::env::var(MAX_SIZE_ENV) {
            Ok(v) => rota_domain::units::parse_size(&v).unwrap_or_else(|e| {
                tracing::warn!("{MAX_SIZE_ENV}: {e}; using {DEFAULT_MAX_SIZE} bytes");
                DEFAULT_MAX_SIZE
            }),
            Err(_) => DEFAULT_MAX_SIZE,
        };
        let keep = match std::env::var(KEEP_ENV) {
            Ok(v) => v.trim().parse::<u32>().ok().filter(|k| (1..=100).contains(k)).unwrap_or_else(|| {
                tracing::warn!("{KEEP_ENV}: '{v}' is not a number from 1 to 100; using {DEFAULT_KEEP}");
                DEFAULT_KEEP
            }),
            Err(_) => DEFAULT_KEEP,
        };
        Self { max_size, keep }
    }
}

/// The `n`th rotated copy of `log` (`<log>.n`).
pub fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{n}"));
    log.with_file_name(name)
}

/// Rotates `log` if it is larger than the limit; true if it did.
pub fn rotate_if_needed(log: &Path, rot: Rotation) -> io::Result<bool> {
    if rot.max_size == 0 {
        return Ok(false);
    }
    let len = match fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= rot.max_size {
        return Ok(false);
    }
    let keep = rot.keep.max(1);
    match fs::remove_file(rotated(log, keep)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match fs::rename(rotated(log, n), rotated(log, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // Lines written between the copy and the truncation are lost; the window is the
    // time of one `set_len`, and losing a line beats a log that fills the disk.
    fs::copy(log, rotated(log, 1))?;
    OpenOptions::new().write(true).open(log)?.set_len(0)?;
    Ok(true)
}

/// Checks `log` every few seconds for as long as the supervisor runs.
pub async fn watch(log: PathBuf, rot: Rotation) {
    if rot.max_size == 0 {
        return;
    }
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let path = log.clone();
        match tokio::task::spawn_blocking(move || rotate_if_needed(&path, rot)).await {
            Ok(Ok(true)) => tracing::info!(
                max_size = rot.max_size,
                keep = rot.keep,
                "log rotated: older lines are in {}",
                rotated(&log, 1).display()
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!("cannot rotate the log {}: {e}", log.display()),
            Err(e) => tracing::warn!("log rotation stopped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_limit_and_keeps_a_bounded_number_of_copies() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w.log");
        let rot = Rotation { max_size: 10, keep: 2 };
        assert!(!rotate_if_needed(&log, rot).unwrap(), "no log, nothing to do");
        fs::write(&log, "short").unwrap();
        assert!(!rotate_if_needed(&log, rot).unwrap());
        for round in 0..4 {
            fs::write(&log, format!("round {round} is long enough")).unwrap();
            assert!(rotate_if_needed(&log, rot).unwrap());
            assert_eq!(fs::metadata(&log).unwrap().len(), 0, "the live log is truncated in place");
            assert_eq!(
                fs::read_to_string(rotated(&log, 1)).unwrap(),
                format!("round {round} is long enough")
            );
        }
        assert_eq!(fs::read_to_string(rotated(&log, 2)).unwrap(), "round 2 is long enough");
        assert!(!rotated(&log, 3).exists(), "only `keep` copies");
        assert!(!rotate_if_needed(&log, Rotation { max_size: 0, keep: 2 }).unwrap(), "0 turns it off");
    }
}
