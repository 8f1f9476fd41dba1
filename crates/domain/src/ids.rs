//! Identifiers. Jobs and worker sessions are UUID v7 (time-ordered); attempts are the
//! store's monotonically increasing fencing ids, so a newer attempt always compares greater.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// How far a job id's clock (the submitting server's) may be from its `created_at` (the
/// store's) when ids bound a scan by submission time: generous, since a bound only prunes.
pub const ID_CLOCK_SLACK_MS: u64 = 10 * 60 * 1000;

/// A job's id (UUID v7, so ids sort by submission time). Parsed (and deserialized) from
/// its text only: a bad id is refused with [`BadJobId`], which names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The smallest id a job submitted at `ms` (Unix milliseconds) or later can have: ids
    /// sort by submission time, so `id >= JobId::first_at(t)` bounds a scan by the key.
    pub fn first_at(ms: u64) -> Self {
        // Callers bounding by submission time leave slack (`ID_CLOCK_SLACK_MS`): an id is
        // drawn from the submitting server's clock, `created_at` from the store's.
        Self(uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid())
    }

    /// When the job was submitted, in Unix milliseconds, as its id says (UUID v7).
    pub fn submitted_ms(&self) -> Option<u64> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos / 1_000_000))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Text that is not a job id; says so naming the text (shown as is to API clients).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a job id (expected a UUID)")]
pub struct BadJobId(pub String);

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| BadJobId(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = JobId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job id (a UUID)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JobId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// An attempt's fencing id. Every claim creates a new, larger one; calls carrying a
/// superseded id are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = i64))]
#[serde(transparent)]
pub struct AttemptId(pub i64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One registration of a worker. A re-registration under the same name gets a new session
/// and supersedes the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh session id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_reads_back_and_a_bad_one_is_named() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(serde_json::from_str::<JobId>(&json).ok(), Some(id));
        let bad = "nope".parse::<JobId>().unwrap_err();
        assert_eq!(bad.to_string(), "'nope' is not a job id (expected a UUID)");
        let err = serde_json::from_str::<JobId>("\"nope\"").unwrap_err().to_string();
        assert!(err.starts_with("'nope' is not a job id (expected a UUID)"), "{err}");
        assert!(serde_json::from_str::<JobId>("17").is_err());
    }
}
