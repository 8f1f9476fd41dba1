//! The lifecycle's one error type. Its kind tells the CLI how to exit: a [`Error::Usage`]
//! is the user's to fix (exit 2), everything else is a failure (exit 1). Messages name
//! the file, flag or process concerned; causes stay attached as `source`.

use std::path::Path;

/// What went wrong starting, stopping or inspecting a background worker or server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag value, template, name or file given by the user (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A system call failed; `what` says what was being done to what.
    #[error("{what}")]
    Io {
        /// `cannot write /home/u/.local/state/rota/workers/default.json`.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The instance is in a state this operation cannot act on safely (a lock held by an
    /// unknown process, a supervisor that does not go away, nothing saved to restart).
    #[error("{0}")]
    State(String),
    /// The worker or server was started but did not come up (the log's last lines and the
    /// foreground command are in it).
    #[error(transparent)]
    StartFailed(Box<crate::launch::StartFailure>),
}

impl Error {
    /// A usage error with this message.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self::Usage(message.to_string())
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }

    /// True for the user's own mistakes (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }
}

/// The lifecycle's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    /// `cannot <verb> <path>`.
    fn at(self, verb: &str, path: &Path) -> Result<T>;
    /// Any description.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, verb: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(format!("cannot {verb} {}", path.display()), e))
    }

    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl From<crate::launch::StartFailure> for Error {
    fn from(f: crate::launch::StartFailure) -> Self {
        Self::StartFailed(Box::new(f))
    }
}

/// An error's message followed by its causes (`workspace X: Permission denied`), for logs
/// and readiness lines that carry one string.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
