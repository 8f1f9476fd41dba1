//! How a worker is asked to stop, in three escalating modes: warm (drain: no new claims,
//! running steps get `drain_timeout`), soft (TERM running step groups now, grace, KILL) and
//! hard (KILL them at once). A mode only ever escalates; every mode still reports the
//! stopped attempts as lost ("worker shut down"), flushes and unregisters.

use std::fmt;
use std::str::FromStr;
use tokio_util::sync::CancellationToken;

/// How urgently a worker must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShutdownMode {
    /// Stop claiming; running steps may finish within the drain timeout.
    Warm,
    /// Stop claiming; TERM running steps now, KILL them after the kill grace.
    Soft,
    /// Stop claiming; KILL running steps at once.
    Hard,
}

impl ShutdownMode {
    /// `warm`, `soft` or `hard`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Soft => "soft",
            Self::Hard => "hard",
        }
    }
}

impl fmt::Display for ShutdownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ShutdownMode::from_str` got something other than warm, soft or hard.
#[derive(Debug, thiserror::Error)]
#[error("unknown shutdown mode '{0}' (expected warm, soft or hard)")]
pub struct UnknownShutdownMode(pub String);

impl FromStr for ShutdownMode {
    type Err = UnknownShutdownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "warm" => Ok(Self::Warm),
            "soft" => Ok(Self::Soft),
            "hard" => Ok(Self::Hard),
            _ => Err(UnknownShutdownMode(s.to_string())),
        }
    }
}

/// Asks a running worker ([`crate::run_with`]) to stop; clones share the request.
#[derive(Clone, Debug, Default)]
pub struct ShutdownHandle {
    warm: CancellationToken,
    soft: CancellationToken,
    hard: CancellationToken,
}

impl ShutdownHandle {
    /// A handle nothing has been requested on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle whose warm request is `token` being cancelled (what [`crate::run`] takes).
    pub fn from_token(token: CancellationToken) -> Self {
        Self { warm: token, ..Self::default() }
    }

    /// Requests `mode`; a milder request after a harsher one changes nothing.
    pub fn request(&self, mode: ShutdownMode) {
        if mode >= ShutdownMode::Hard {
            self.hard.cancel();
        }
        if mode >= ShutdownMode::Soft {
            self.soft.cancel();
        }
        self.warm.cancel();
    }

    /// The harshest mode requested so far.
    pub fn requested(&self) -> Option<ShutdownMode> {
        if self.hard.is_cancelled() {
            Some(ShutdownMode::Hard)
        } else if self.soft.is_cancelled() {
            Some(ShutdownMode::Soft)
        } else if self.warm.is_cancelled() {
            Some(ShutdownMode::Warm)
        } else {
            None
        }
    }

    /// Cancelled on any request.
    pub(crate) fn warm(&self) -> &CancellationToken {
        &self.warm
    }

    /// Cancelled on a soft or hard request.
    pub(crate) fn soft(&self) -> &CancellationToken {
        &self.soft
    }

    /// Cancelled on a hard request.
    pub(crate) fn hard(&self) -> &CancellationToken {
        &self.hard
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_only_escalate() {
        let h = ShutdownHandle::new();
        assert_eq!(h.requested(), None);
        h.request(ShutdownMode::Soft);
        assert_eq!(h.requested(), Some(ShutdownMode::Soft));
        assert!(h.warm().is_cancelled() && h.soft().is_cancelled() && !h.hard().is_cancelled());
        h.request(ShutdownMode::Warm);
        assert_eq!(h.requested(), Some(ShutdownMode::Soft));
        h.clone().request(ShutdownMode::Hard);
        assert_eq!(h.requested(), Some(ShutdownMode::Hard));
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [ShutdownMode::Warm, ShutdownMode::Soft, ShutdownMode::Hard] {
            assert_eq!(m.to_string().parse::<ShutdownMode>().unwrap(), m);
        }
        assert!("gentle".parse::<ShutdownMode>().is_err());
        let token = CancellationToken::new();
        let h = ShutdownHandle::from_token(token.clone());
        token.cancel();
        assert_eq!(h.requested(), Some(ShutdownMode::Warm));
    }
}
