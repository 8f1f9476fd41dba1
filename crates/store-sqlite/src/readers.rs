//! A small pool of read-only connections used from `spawn_blocking`, so reads never wait
//! for the writer thread. Each read runs in one read transaction (a consistent snapshot);
//! nothing here may write.

use crate::error::{Result, SqliteError};
use crate::schema;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Read-only connections to one database file.
pub(crate) struct Readers {
    name: &'static str,
    path: PathBuf,
    busy_timeout: Duration,
    keep: usize,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// A pool keeping up to `keep` idle connections (more are opened under load).
    pub(crate) fn new(name: &'static str, path: PathBuf, busy_timeout: Duration, keep: usize) -> Arc<Self> {
        Arc::new(Self { name, path, busy_timeout, keep: keep.max(1), idle: Mutex::new(Vec::new()) })
    }

    /// Runs `read` on a pooled connection inside a read transaction.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> rota_store::Result<T> {
        let me = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let conn = me.take()?;
            let r = conn.unchecked_transaction().map_err(Into::into).and_then(|tx| read(&tx));
            me.put(conn)?;
            r
        });
        match task.await {
            Ok(r) => r.map_err(Into::into),
            Err(e) => Err(SqliteError::Task(e.to_string()).into()),
        }
    }

    fn take(&self) -> Result<Connection> {
        let pooled = self.idle.lock().map_err(|_| SqliteError::Poisoned(self.name))?.pop();
        match pooled {
            Some(c) => Ok(c),
            None => schema::open_reader(&self.path, self.busy_timeout),
        }
    }

    fn put(&self, conn: Connection) -> Result<()> {
        let mut idle = self.idle.lock().map_err(|_| SqliteError::Poisoned(self.name))?;
        if idle.len() < self.keep {
            idle.push(conn);
        }
        Ok(())
    }
}
