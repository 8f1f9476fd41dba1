//! States of jobs, steps and attempts. Stored as their snake_case names.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// The stored and displayed name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$v),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!(
                        "unknown {} '{}'; expected one of: {}",
                        stringify!($name), s, [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

named_enum! {
    /// A job's state. `unschedulable` is not stored: listings derive it for queued jobs no
    /// live worker can take.
    JobState {
        /// Waiting for a worker (some steps may have run already).
        Queued = "queued",
        /// At least one step is running.
        Running = "running",
        /// Every step succeeded.
        Succeeded = "succeeded",
        /// A step failed (exit code, timeout, memory, lost without retries) or the deadline
        /// passed.
        Failed = "failed",
        /// Cancelled by `rota job cancel`.
        Cancelled = "cancelled",
        /// Revoked by `rota worker revoke`.
        Revoked = "revoked",
    }
}

impl JobState {
    /// True once the job can change no more (short of `job retry`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Revoked)
    }
}

named_enum! {
    /// A step's state.
    StepState {
        /// Its `needs` have not all succeeded yet.
        Waiting = "waiting",
        /// Claimable (possibly not before its retry time).
        Ready = "ready",
        /// An attempt holds it.
        Running = "running",
        /// Its last attempt succeeded.
        Succeeded = "succeeded",
        /// It failed for good.
        Failed = "failed",
        /// The job was cancelled before or while it ran.
        Cancelled = "cancelled",
        /// The job was revoked before or while it ran.
        Revoked = "revoked",
        /// Not run because another step failed or the deadline passed.
        Skipped = "skipped",
    }
}

impl StepState {
    /// True once the step will not run again (short of `job retry`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Revoked | Self::Skipped)
    }
}

named_enum! {
    /// How an attempt ended, as recorded.
    AttemptStatus {
        /// Still held by a worker.
        Running = "running",
        /// Exit code 0.
        Succeeded = "succeeded",
        /// Non-zero exit or killed by a signal.
        Failed = "failed",
        /// Killed for exceeding the step's timeout.
        Timeout = "timeout",
        /// Killed for exceeding the step's memory limit.
        Memory = "memory",
        /// Killed because the job was cancelled or revoked.
        Cancelled = "cancelled",
        /// Its worker stopped renewing the lease, or was superseded.
        Lost = "lost",
    }
}

named_enum! {
    /// Which output stream a log chunk came from.
    Stream {
        /// Standard output.
        Stdout = "stdout",
        /// Standard error.
        Stderr = "stderr",
    }
}

/// How an attempt ended, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The script exited 0.
    Succeeded,
    /// The script exited non-zero or died of a signal.
    Failed {
        /// Exit code, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Signal number, if a signal killed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// Why, when the script could not be run at all (e.g. its environment is over the
        /// kernel's limits); such a step fails, it is not `lost`. Older servers ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// Killed after its timeout.
    Timeout,
    /// Killed for exceeding its memory limit.
    Memory,
    /// Killed because the job was cancelled or revoked.
    Cancelled,
    /// The worker could not run it to the end (spawn failure, lease lost, shutdown).
    Lost {
        /// Why.
        why: String,
    },
}

impl AttemptOutcome {
    /// The recorded status for this outcome.
    pub fn status(&self) -> AttemptStatus {
        match self {
            Self::Succeeded => AttemptStatus::Succeeded,
            Self::Failed { .. } => AttemptStatus::Failed,
            Self::Timeout => AttemptStatus::Timeout,
            Self::Memory => AttemptStatus::Memory,
            Self::Cancelled => AttemptStatus::Cancelled,
            Self::Lost { .. } => AttemptStatus::Lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), *s);
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), *s);
        }
        assert!("nope".parse::<JobState>().unwrap_err().contains("queued"));
    }

    #[test]
    fn outcome_wire_form() {
        let o = AttemptOutcome::Failed { exit_code: Some(3), signal: None, why: None };
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"status":"failed","exit_code":3}"#);
        assert_eq!(o.reason(), "exit code 3");
    }
}
