//! How domain values are written in columns: states and streams as text, documents and
//! outcomes as JSON, durations as intervals computed here. Pure conversions; no queries.

use crate::error::{Result, corrupt};
use chrono::{DateTime, Utc};
use rota_domain::AttemptId;
use rota_store::StopCause;
use std::str::FromStr;
use std::time::Duration;

/// `now + ttl`, saturating at the far future.
pub(crate) fn after(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A state or stream stored by its snake_case name.
pub(crate) fn parse_name<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(corrupt)
}

/// The stored name of a stop cause.
pub(crate) fn stop_cause_name(c: StopCause) -> &'static str {
    match c {
        StopCause::Cancelled => "cancelled",
        StopCause::Revoked => "revoked",
        StopCause::Deadline => "deadline",
        StopCause::NotHeld => "not_held",
    }
}

/// A stored stop cause.
pub(crate) fn stop_cause(s: &str) -> Result<StopCause> {
    match s {
        "cancelled" => Ok(StopCause::Cancelled),
        "revoked" => Ok(StopCause::Revoked),
        "deadline" => Ok(StopCause::Deadline),
        "not_held" => Ok(StopCause::NotHeld),
        other => Err(corrupt(format!("unknown stop cause '{other}'"))),
    }
}

/// [`stop_cause`] for a nullable column.
pub(crate) fn opt_stop_cause(s: Option<String>) -> Result<Option<StopCause>> {
    s.as_deref().map(stop_cause).transpose()
}

/// Retry jitter for attempts that end without a worker's report (lost): derived from the
/// fencing id so a mass expiry spreads its retries instead of stampeding (as SQLite's).
pub(crate) fn jitter_for(id: AttemptId) -> f64 {
    let h = (id.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A non-negative count from a column.
pub(crate) fn u32_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("{v} is not a valid count")))
}

/// A size for a column (sizes past `i64::MAX` do not occur; they saturate).
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored size (negative ones do not occur; they read as 0).
pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
