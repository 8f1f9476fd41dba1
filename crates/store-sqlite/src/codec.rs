//! How domain values are written in columns: times as unix milliseconds, ids and states as
//! text, documents as JSON. Pure conversions; no queries here.

use crate::error::{Result, corrupt};
use chrono::{DateTime, Utc};
use rota_domain::{AttemptId, JobId, SessionId};
use rota_store::StopCause;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use std::time::Duration;

/// Unix milliseconds of an instant.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// `now + ttl` in unix milliseconds, saturating.
pub(crate) fn ms_after(now: DateTime<Utc>, ttl: Duration) -> i64 {
    let add = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    ms(now).saturating_add(add)
}

/// The instant of stored unix milliseconds.
pub(crate) fn time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("time {ms} ms is out of range")))
}

/// [`time`] for a nullable column.
pub(crate) fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    ms.map(time).transpose()
}

/// A state or stream stored by its snake_case name.
pub(crate) fn parse_name<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(corrupt)
}

/// A stored job id.
pub(crate) fn job_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|e| corrupt(format!("job id '{s}': {e}")))
}

/// A stored session id.
pub(crate) fn session_id(s: &str) -> Result<SessionId> {
    s.parse().map(SessionId).map_err(|e| corrupt(format!("session id '{s}': {e}")))
}

/// A value as JSON text.
pub(crate) fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

/// A value from stored JSON text.
pub(crate) fn from_json<T: DeserializeOwned>(s: &str) -> Result<T> {
    Ok(serde_json::from_str(s)?)
}

/// The stored name of a stop cause (`NotHeld` is never stored).
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

/// Retry jitter for attempts that end without a worker's report (lost): derived from the
/// fencing id so a mass expiry spreads its retries instead of stampeding.
pub(crate) fn jitter_for(id: AttemptId) -> f64 {
    let h = (id.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A non-negative count or size from a column.
pub(crate) fn u32_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("{v} is not a valid count")))
}

/// A size for a column (sizes past `i64::MAX` do not occur; they saturate).
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_in_range_and_spread() {
        let js: Vec<f64> = (1..100).map(|i| jitter_for(AttemptId(i))).collect();
        assert!(js.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(js.iter().any(|j| *j < 0.3) && js.iter().any(|j| *j > 0.7));
    }

    #[test]
    fn times_round_trip_in_milliseconds() {
        let t = time(1_700_000_000_123).unwrap();
        assert_eq!(ms(t), 1_700_000_000_123);
        assert_eq!(ms_after(t, Duration::from_secs(2)), 1_700_000_002_123);
    }
}
