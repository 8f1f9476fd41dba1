//! The one error of this crate: what is wrong with a document, or why it could not be read,
//! worded for the user (`job.yaml:3:5: ...`). Only the CLI decides what exit code it means.

/// A document that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (`name: cannot read: ...`).
    #[error("{name}: cannot read: {source}")]
    Read {
        /// The file's name as given.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A directory could not be listed (`name: cannot list: ...`).
    #[error("{name}: cannot list: {source}")]
    List {
        /// The directory's name as given.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// Stdin could not be read (not the user's mistake: no usage error).
    #[error("cannot read {what} from stdin: {source}")]
    Stdin {
        /// What was being read (`the job document`, `documents`).
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a document of the expected shape or breaks a rule; the message leads
    /// with where (`file:line:column: ...`).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether the user's input is to blame (a usage error) rather than stdin failing.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Stdin { .. })
    }
}

/// An [`Error::Invalid`] with this message.
pub(crate) fn invalid(message: impl std::fmt::Display) -> Error {
    Error::Invalid(message.to_string())
}
