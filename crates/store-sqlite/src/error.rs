//! Errors of this backend and how they become [`StoreError`]s. Driver errors never leave
//! the crate as themselves: callers see `StoreError::Backend` wrapping a [`SqliteError`].
//! Inside the crate, [`Error`] carries either a store-level answer or a backend failure.

use rota_store::{ConflictKind, StoreError};

/// A failure of the SQLite backend itself (as opposed to a refused request).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The SQLite driver failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer rota.
    #[error(
        "database {path} has schema version {found}, but this build of rota only knows up to \
         version {known}; upgrade rota or point it at another database"
    )]
    SchemaTooNew {
        /// The database file.
        path: String,
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A stored value cannot be decoded (or a value cannot be encoded for storage).
    #[error("stored data cannot be decoded: {0}")]
    Corrupt(String),
    /// The writer thread has stopped, so nothing can be written.
    #[error("the {0} database writer has stopped")]
    WriterGone(&'static str),
    /// The transaction a write ran in could not be committed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A write operation panicked; its savepoint was rolled back.
    #[error("a write operation panicked")]
    Panicked,
    /// A lock was poisoned by a panic in another thread.
    #[error("the {0} lock is poisoned")]
    Poisoned(&'static str),
    /// Creating the database directory or a thread failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A blocking read task failed.
    #[error("read task failed: {0}")]
    Task(String),
    /// The device holding the database file has no space left (SQLITE_FULL, ENOSPC).
    #[error("no space left on the device holding {}: {detail}", path.display())]
    DiskFull {
        /// The database file a write failed on.
        path: std::path::PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
}

impl SqliteError {
    /// True when this failure means the disk is full.
    pub(crate) fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            Self::Io(e) => e.kind() == std::io::ErrorKind::StorageFull,
            Self::DiskFull { .. } => true,
            _ => false,
        }
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::DiskFull { path, detail } => StoreError::StorageFull { path, detail },
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

/// The crate's internal error: a store answer (NotFound, Conflict, ...) or a backend failure.
#[derive(Debug)]
pub(crate) enum Error {
    /// Goes to the caller as is.
    Store(StoreError),
    /// Goes to the caller as `StoreError::Backend`.
    Backend(SqliteError),
}

/// Result with the crate's internal [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when this failure means the disk is full.
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, Error::Backend(b) if b.is_disk_full())
    }

    /// A disk-full failure as [`SqliteError::DiskFull`] naming `path`; others unchanged.
    pub(crate) fn naming(self, path: &std::path::Path) -> Error {
        match self {
            Error::Backend(b) if b.is_disk_full() && !matches!(b, SqliteError::DiskFull { .. }) => {
                Error::Backend(SqliteError::DiskFull { path: path.to_path_buf(), detail: b.to_string() })
            }
            other => other,
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s,
            Error::Backend(b) => b.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<SqliteError> for Error {
    fn from(e: SqliteError) -> Self {
        Error::Backend(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Backend(SqliteError::Sqlite(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Backend(SqliteError::Corrupt(e.to_string()))
    }
}

/// `Conflict`: the caller does not hold what it names, or the state forbids the change.
pub(crate) fn conflict(kind: ConflictKind, msg: impl Into<String>) -> Error {
    Error::Store(StoreError::Conflict(kind, msg.into()))
}

/// `NotFound`: the named job, attempt or session does not exist.
pub(crate) fn not_found(msg: impl Into<String>) -> Error {
    Error::Store(StoreError::NotFound(msg.into()))
}

/// A stored value that cannot be decoded.
pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
    Error::Backend(SqliteError::Corrupt(msg.into()))
}
