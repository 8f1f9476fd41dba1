//! Errors every backend maps its driver errors into.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The job, attempt or session does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller does not hold the attempt, it was superseded, or the state forbids it:
    /// `kind` says which (callers match on it), the text says it to people.
    #[error("conflict: {1}")]
    Conflict(ConflictKind, String),
    /// A registration names a worker whose live session belongs to another instance (and
    /// did not ask to replace it). Nothing was written.
    #[error("worker name \"{}\" is held by a live session of another instance", .0.name)]
    NameHeld(Box<crate::records::NameHolder>),
    /// The input cannot be stored as given.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The device holding the named file or directory has no space left (ENOSPC,
    /// SQLITE_FULL). Nothing of the refused write was kept; it may succeed once space is
    /// freed.
    #[error("no space left on the device holding {}: {detail}", path.display())]
    StorageFull {
        /// The database file (or directory) that could not be written.
        path: std::path::PathBuf,
        /// What the backend reported.
        detail: String,
    },
    /// The database cannot be reached right now (a restart, a network cut, every pooled
    /// connection busy past its wait). Nothing was changed by the refused call, as far as
    /// the backend knows; it may succeed when retried shortly.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption, driver error).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a [`StoreError::Conflict`] was refused. Nothing was written in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// The attempt is held by another worker session (lost, superseded, someone else's).
    NotHeld,
    /// The attempt has ended (or ended differently from what a repeat reports).
    Ended,
    /// The attempt is unknown, or belongs to another job or step than the call names.
    WrongAttempt,
    /// A new record's id (a job, a session or its credential) already exists.
    Exists,
    /// The job's state forbids the change (a retry of a job that has not ended, or whose
    /// step is still stopping).
    JobState,
    /// The worker name was forgotten with `--block`: it may not register until unblocked.
    Blocked,
    /// A secret write or re-encryption names another key-encryption key than the store
    /// holds (a rotation happened meanwhile), or the secrets changed during a rotation.
    SecretKey,
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The refusal of a registration under a name forgotten with `--block` (both backends
    /// say it the same way).
    pub fn blocked_worker(namespace: &str, name: &str) -> Self {
        StoreError::Conflict(
            ConflictKind::Blocked,
            format!(
                "worker name \"{name}\" (namespace {namespace}) was forgotten with --block: it may not \
                 register until an operator runs `rota worker unblock {name}`"
            ),
        )
    }
}
