//! Errors of this backend and how they become [`StoreError`]s. Driver errors never leave the
//! crate as themselves: callers see `StoreError::Backend` wrapping a [`PgError`]. Inside the
//! crate, [`Error`] carries either a store-level answer or a backend failure, and says
//! whether a failed transaction is worth running again (deadlock, serialization failure).

use rota_store::{ConflictKind, StoreError};
use tokio_postgres::error::SqlState;

/// A failure of the PostgreSQL backend itself (as opposed to a refused request).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The driver or the server failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool (exhausted, or the database unreachable).
    #[error("postgres connection pool: {0}")]
    Pool(String),
    /// No connection to the database could be opened at start (unreachable, refused, or
    /// its TLS failed). Names where it was sought (hosts and ports, never the password).
    #[error("cannot connect to the PostgreSQL database at {target}: {detail}")]
    Unreachable {
        /// `host:port` of each host the URL names.
        target: String,
        /// What the driver said.
        detail: String,
    },
    /// The URL or the options cannot make a connection configuration.
    #[error("postgres configuration: {0}")]
    Config(String),
    /// The database holds a schema this build cannot work with.
    #[error(
        "the database has schema version {found} (compatible down to {min_compatible}), but this \
         build of rota only knows up to version {known}; upgrade rota or point it at another database"
    )]
    SchemaTooNew {
        /// Newest version applied to the database.
        found: i64,
        /// Oldest version of rota's schema that still works with it.
        min_compatible: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A stored value cannot be decoded (or a value cannot be encoded for storage).
    #[error("stored data cannot be decoded: {0}")]
    Corrupt(String),
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        if e.is_unavailable() {
            return StoreError::Unavailable(e.to_string());
        }
        StoreError::Backend(Box::new(e))
    }
}

impl PgError {
    /// The database could not be reached (no pooled connection in time, a closed or
    /// refused connection, the server shutting down or starting): the caller may retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            PgError::Pool(_) => true,
            PgError::Postgres(e) => {
                e.is_closed()
                    || e.as_db_error().is_none_or(|d| {
                        matches!(
                            d.code(),
                            &SqlState::ADMIN_SHUTDOWN
                                | &SqlState::CRASH_SHUTDOWN
                                | &SqlState::CANNOT_CONNECT_NOW
                                | &SqlState::CONNECTION_FAILURE
                                | &SqlState::CONNECTION_EXCEPTION
                                | &SqlState::TOO_MANY_CONNECTIONS
                        )
                    }) && !is_decode(e)
            }
            _ => false,
        }
    }
}

/// A driver error about converting a value, not about reaching the server.
fn is_decode(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| !s.is::<std::io::Error>())
        && e.as_db_error().is_none()
        && !e.is_closed()
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // From the pool, a driver error is a failure to open a connection: the
            // database is unreachable (or refuses connections) for now.
            deadpool_postgres::PoolError::Backend(pg) => {
                PgError::Pool(format!("cannot connect: {}", chain(&pg)))
            }
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// `e` and its causes, `: `-separated: the driver's own text names only the kind of
/// failure ("error performing TLS handshake"), the cause says which ("invalid peer
/// certificate: UnknownIssuer"). Driver errors never quote the password.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        next = cause.source();
    }
    text
}

/// The crate's internal error: a store answer (NotFound, Conflict, ...) or a backend failure.
#[derive(Debug)]
pub(crate) enum Error {
    /// Goes to the caller as is.
    Store(StoreError),
    /// Goes to the caller as `StoreError::Backend`.
    Backend(PgError),
}

/// Result with the crate's internal [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The SQLSTATE of a server error, if this is one.
    pub(crate) fn code(&self) -> Option<&SqlState> {
        match self {
            Error::Backend(PgError::Postgres(e)) => e.code(),
            _ => None,
        }
    }

    /// True when running the whole transaction again may succeed: it lost a deadlock or a
    /// serialization conflict to a concurrent one.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
    }

    /// True when a unique index refused the row; with the constraint's name.
    pub(crate) fn unique_violation(&self) -> Option<&str> {
        match self {
            Error::Backend(PgError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Some(e.as_db_error().and_then(|d| d.constraint()).unwrap_or(""))
            }
            _ => None,
        }
    }

    /// True when the failure is not the item's own (the connection or transaction is gone,
    /// or the transaction must run again): a batch stops at it instead of answering the item.
    pub(crate) fn ends_the_batch(&self) -> bool {
        match self {
            Error::Backend(PgError::Postgres(e)) => {
                e.is_closed() || self.is_retryable() || e.code().is_none()
            }
            Error::Backend(PgError::Pool(_)) => true,
            _ => false,
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

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        Error::Backend(e)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Backend(PgError::Postgres(e))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Backend(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Backend(PgError::Corrupt(e.to_string()))
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
    Error::Backend(PgError::Corrupt(msg.into()))
}
