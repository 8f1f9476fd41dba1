//! Exit codes, and the error that carries one. Commands return `anyhow::Error`; the few
//! that must not exit 1 (usage errors, refused worker configuration, a closed stdout) wrap
//! it in [`Failure`] or [`StdoutClosed`], which `main` finds with `downcast_ref`.

use std::fmt;

/// A usage error: bad flag values, invalid job documents.
pub(crate) const EXIT_USAGE: u8 = 2;
/// The worker's own exit for bad configuration (refused token, invalid flags): a supervisor
/// must not restart it. Also any command whose environment cannot serve it while its
/// command line is fine (a missing token file, `rota top` without a terminal).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

/// A usage error (exit 2) with this message.
pub(crate) fn usage(message: impl fmt::Display) -> anyhow::Error {
    Failure { code: EXIT_USAGE, error: anyhow::anyhow!("{message}") }.into()
}

/// A document's error (`rota_manifest`) as the CLI reports it: a usage error (exit 2)
/// unless reading stdin failed.
pub(crate) fn document_error(e: rota_manifest::Error) -> anyhow::Error {
    if e.is_usage() { usage(e) } else { anyhow::Error::new(e) }
}

/// `error`, ending the process with `code`.
pub(crate) fn with_code(code: u8, error: anyhow::Error) -> anyhow::Error {
    Failure { code, error }.into()
}

/// The exit code `error` ends the process with: a [`Failure`]'s, 2 for a lifecycle usage
/// error (a bad template, name or bind address), else 1.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(f) = error.downcast_ref::<Failure>() {
        return f.code;
    }
    match error.downcast_ref::<rota_lifecycle::Error>() {
        Some(e) if e.is_usage() => EXIT_USAGE,
        _ => 1,
    }
}

/// The start that failed in `error`, when it is one (its log lines and the foreground
/// command are shown with it).
pub(crate) fn start_failure(error: &anyhow::Error) -> Option<&rota_lifecycle::launch::StartFailure> {
    match error.downcast_ref::<rota_lifecycle::Error>() {
        Some(rota_lifecycle::Error::StartFailed(f)) => Some(f),
        _ => None,
    }
}

/// Stdout was closed by the reader (`rota job logs ID | head`): not an error, stop quietly.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}
