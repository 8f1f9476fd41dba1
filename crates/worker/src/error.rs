//! The worker's error type: only what ends `run`. Transient trouble (an unreachable
//! server, a failed step) is handled inside and never surfaces here.

use std::path::PathBuf;

/// Why [`crate::run`] returned an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused to register this worker (bad join token, protocol version
    /// mismatch, invalid registration). Retrying will not help: bad configuration.
    #[error("the server refused this worker: {message}")]
    Refused {
        /// The server's explanation.
        message: String,
    },
    /// The worker's name is held by a live worker of another instance (the server's
    /// message names its host, instance and last heartbeat), or another instance took it
    /// over while this worker ran. Bad configuration: retrying would take the name back
    /// and forth forever.
    #[error("{message}")]
    NameHeld {
        /// What holds the name and what to do about it.
        message: String,
    },
    /// The workspace cannot be created, locked or read. (The cause is the error's source,
    /// not repeated in its message: `{:#}` prints both once.)
    #[error("workspace {}", path.display())]
    Workspace {
        /// The directory or file concerned.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Another worker holds the workspace's lock (`.rota/worker.lock`): two workers on one
    /// workspace would reap each other's steps at boot. Bad configuration, like
    /// [`Self::InvalidConfig`]: retrying will not help while the other one runs.
    #[error(
        "workspace {}: in use by another worker (its .rota/worker.lock is held); give each worker \
         its own workspace (the default one is per --name)",
        path.display()
    )]
    WorkspaceInUse {
        /// The workspace.
        path: PathBuf,
    },
    /// An operator forgot this worker (`rota worker forget`): its steps were killed and it
    /// must not register again on its own. Configuration: it stays down until someone
    /// starts it again (or, after `--block`, unblocks its name).
    #[error("{message}")]
    Forgotten {
        /// What happened and what to do.
        message: String,
    },
    /// The configuration cannot work (bad server address, zero concurrency, ...).
    #[error("invalid worker configuration: {0}")]
    InvalidConfig(String),
    /// The step spawner helper died or its socket broke: no step can be started or
    /// watched any more, so the worker stops (a supervisor restarts it).
    #[error("the step spawner stopped: {0}")]
    Spawner(String),
    /// Not a failure: the worker drained and stopped to be replaced by a fresh process
    /// (`--max-jobs` reached or `--max-memory` passed). The CLI exits with the recycling
    /// code so the supervisor starts a new worker under the same name.
    #[error("recycled: {reason}")]
    Recycled {
        /// What triggered it.
        reason: String,
    },
}
