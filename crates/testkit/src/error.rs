//! Why the kit could not start something, for callers that report instead of panicking
//! (the bench). Test-facing helpers panic with the same text.

use std::path::PathBuf;
use std::time::Duration;

/// A kit operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It did not print its readiness line in time (its stderr so far is included).
    #[error("{program} did not print {ready:?} within {within:?}; stderr:\n{output}")]
    NotReady {
        /// The program.
        program: PathBuf,
        /// The line part waited for.
        ready: String,
        /// How long it was given.
        within: Duration,
        /// Its stderr so far.
        output: String,
    },
    /// A file the server writes (a token) cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
