//! The single writer of one database file: a connection owned by a dedicated OS thread and
//! fed by a channel. Group commit: every queued operation runs in one `BEGIN IMMEDIATE`
//! transaction, each in its own savepoint (itemised ops: per item, or none for items that
//! check before they write), and replies go out only after COMMIT. Owns transactions and
//! durability, and says once (not per write) when the disk is full; it knows nothing of jobs.

use crate::error::{Result, SqliteError};
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// How hard a commit must be on disk before its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `synchronous=NORMAL`: survives a process crash; a power loss may undo it (it only
    /// re-runs a step).
    Normal,
    /// `synchronous=FULL`: the WAL is fsynced before the reply.
    Full,
}

/// A write waiting for its batch.
trait Op: Send {
    fn durability(&self) -> Durability;
    /// Runs inside the batch transaction. Returns true if the op failed after writing part of
    /// its change with no savepoint to undo it: the whole batch must then roll back.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// True when the op failed because the disk is full.
    fn disk_full(&self) -> bool;
    /// Sends the reply: the op's own result if the batch committed, else the commit error.
    /// A disk-full failure names `path`.
    fn finish(self: Box<Self>, commit: std::result::Result<(), &BatchError>, path: &Path);
}

/// Why nothing of a batch was committed.
#[derive(Debug)]
struct BatchError {
    message: String,
    /// The disk is full (SQLITE_FULL from an op or the commit).
    disk_full: bool,
}

impl BatchError {
    fn of(e: &rusqlite::Error) -> Self {
        Self {
            message: e.to_string(),
            disk_full: e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
        }
    }
}

type OpFn<T> = Box<dyn FnOnce(&Connection) -> Result<T> + Send>;

struct Pending<T> {
    durability: Durability,
    /// Whether the op runs inside its own savepoint. Off for itemised ops (`run_itemised`),
    /// whose items each run in `in_savepoint` or `unsaved_item`.
    savepoint: bool,
    work: Option<OpFn<T>>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<rota_store::Result<T>>,
}

impl<T: Send> Op for Pending<T> {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        if self.savepoint {
            self.result = Some(in_savepoint(conn, work));
            return false;
        }
        let before = conn.total_changes();
        let result = guarded(conn, work);
        let torn = result.is_err() && conn.total_changes() != before;
        self.result = Some(result);
        torn
    }

    fn disk_full(&self) -> bool {
        matches!(&self.result, Some(Err(e)) if e.is_disk_full())
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), &BatchError>, path: &Path) {
        let reply = match (commit, self.result) {
            (Ok(()), Some(r)) => r.map_err(|e| e.naming(path).into()),
            (Ok(()), None) => Err(SqliteError::Commit("operation was not run".into()).into()),
            (Err(e), _) if e.disk_full => {
                Err(SqliteError::DiskFull { path: path.to_path_buf(), detail: e.message.clone() }.into())
            }
            (Err(e), _) => Err(SqliteError::Commit(e.message.clone()).into()),
        };
        // The caller may have gone away; its write stands regardless.
        let _ = self.reply.send(reply);
    }
}

/// Runs one transaction-control statement, prepared once per connection (parsing it
/// again for every operation showed up in profiles).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn roll_back_savepoint(conn: &Connection) -> rusqlite::Result<()> {
    control(conn, "ROLLBACK TO op")?;
    control(conn, "RELEASE op")
}

/// Runs `f` inside a savepoint: kept if it returns `Ok`, rolled back if it fails or panics.
/// Nests: item-level savepoints inside an operation's savepoint use the same helper.
pub(crate) fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    control(conn, "SAVEPOINT op")?;
    let r = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => Err(SqliteError::Panicked.into()),
    };
    let end = match &r {
        Ok(_) => control(conn, "RELEASE op"),
        Err(_) => roll_back_savepoint(conn),
    };
    match (end, r) {
        (Ok(()), r) => r,
        // SQLite may have rolled the whole transaction back already (disk full): the
        // savepoint is gone, and the op's own error says why.
        (Err(_), Err(e)) => {
            let _ = roll_back_savepoint(conn);
            Err(e)
        }
        (Err(e), Ok(_)) => {
            let _ = roll_back_savepoint(conn);
            Err(e.into())
        }
    }
}

/// Runs an itemised op without a savepoint of its own; a panic still becomes an error. If it
/// fails after writing, the writer rolls the whole batch back (see `Op::apply`).
fn guarded<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => Err(SqliteError::Panicked.into()),
    }
}

/// Runs one item of an itemised op without a savepoint: cheaper than `in_savepoint`, whose
/// sub-journal copies every page the item touches. The item must check before it writes.
/// `Ok(Err(_))`: it was refused before writing anything, alone. `Err(_)`: it failed after
/// writing (a driver error, corrupt data, a panic), which nothing can undo alone, so the
/// whole op fails and the writer rolls back its batch; every op in it gets the error and
/// nothing of it is kept.
pub(crate) fn unsaved_item<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<rota_store::Result<T>> {
    let before = conn.total_changes();
    match guarded(conn, f) {
        Err(e) if conn.total_changes() != before => Err(e),
        r => Ok(r.map_err(Into::into)),
    }
}

/// Handle to a writer thread. Dropping it lets the thread finish its queue and close the
/// connection, and waits for that.
pub(crate) struct Writer {
    name: &'static str,
    tx: Option<mpsc::Sender<Box<dyn Op>>>,
    thread: Option<JoinHandle<()>>,
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub(crate) fn spawn(name: &'static str, conn: Connection) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        let batches = Arc::new(AtomicU64::new(0));
        let counter = batches.clone();
        let path = PathBuf::from(conn.path().unwrap_or(name));
        let thread = std::thread::Builder::new()
            .name(format!("rota-sqlite-{name}"))
            .spawn(move || run_batches(name, &path, conn, rx, &counter))
            .map_err(SqliteError::Io)?;
        Ok(Self { name, tx: Some(tx), thread: Some(thread), batches })
    }

    /// Queues `work` for the next batch and waits until it is committed (or failed). It runs
    /// in its own savepoint: an `Err` undoes all of its writes.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        durability: Durability,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> rota_store::Result<T> {
        self.enqueue(durability, true, Box::new(work)).await
    }

    /// Like [`Writer::run`] for work made of items that each run in `in_savepoint` or
    /// `unsaved_item`: it gets no savepoint of its own. If it returns `Err` after writing,
    /// its whole batch is rolled back and fails.
    pub(crate) async fn run_itemised<T: Send + 'static>(
        &self,
        durability: Durability,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> rota_store::Result<T> {
        self.enqueue(durability, false, Box::new(work)).await
    }

    async fn enqueue<T: Send + 'static>(
        &self,
        durability: Durability,
        savepoint: bool,
        work: OpFn<T>,
    ) -> rota_store::Result<T> {
        let (reply, rx) = oneshot::channel();
        let op = Box::new(Pending { durability, savepoint, work: Some(work), result: None, reply });
        let gone = || rota_store::StoreError::from(SqliteError::WriterGone(self.name));
        self.tx.as_ref().ok_or_else(gone)?.send(op).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Batches committed so far (for tests of group commit).
    #[cfg(test)]
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!(db = self.name, "sqlite writer thread panicked");
        }
    }
}

fn run_batches(
    name: &'static str,
    path: &Path,
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Op>>,
    batches: &AtomicU64,
) {
    let mut full = false;
    // Said once when writes start failing for lack of space, and once when they work again:
    // a full disk fails every request, and a log line per request would only add to it.
    let mut out_of_space = false;
    // Blocks while idle; a batch is whatever queued up while the previous one committed.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Operations that need no fsync (claims, completions, heartbeats) commit first, in
        // their own transaction, and get their replies before the fsync of the durable ones
        // (submits) in the same batch: otherwise every claim queued next to a submit waits
        // for a disk flush it does not need (the latency bench's p99 under load). Ops in one
        // batch were all in flight at once, so any order between them is a valid one.
        let (durable, quick): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|op| op.durability() == Durability::Full);
        for (mut group, want_full) in [(quick, false), (durable, true)] {
            if group.is_empty() {
                continue;
            }
            let changes_before = conn.total_changes();
            let outcome = commit_batch(&conn, &mut group, want_full, &mut full);
            batches.fetch_add(1, Ordering::Relaxed);
            // A batch that changed nothing (an empty claim) commits even on a full disk.
            let wrote = conn.total_changes() != changes_before;
            let disk_full =
                outcome.as_ref().err().is_some_and(|e| e.disk_full) || group.iter().any(|op| op.disk_full());
            if disk_full && !out_of_space {
                tracing::error!(db = name, path = %path.display(),
                    "no space left on the device holding the database: writes fail (HTTP 507) until space is freed");
            } else if let (Err(e), false) = (&outcome, disk_full) {
                tracing::error!(db = name, error = %e.message, ops = group.len(), "sqlite batch failed");
            } else if out_of_space && !disk_full && outcome.is_ok() && wrote {
                tracing::info!(db = name, path = %path.display(), "space available again: writes succeed");
            }
            out_of_space = disk_full || (out_of_space && !(outcome.is_ok() && wrote));
            let commit = outcome.as_ref().map(|_| ());
            for op in group {
                op.finish(commit, path);
            }
        }
    }
}

/// Runs one batch; `Err` means nothing of it was committed.
fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Op>],
    want_full: bool,
    full: &mut bool,
) -> std::result::Result<(), BatchError> {
    if want_full != *full {
        let level = if want_full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", level).map_err(|e| BatchError::of(&e))?;
        *full = want_full;
    }
    control(conn, "BEGIN IMMEDIATE").map_err(|e| BatchError::of(&e))?;
    for op in batch.iter_mut() {
        let torn = op.apply(conn);
        let disk_full = op.disk_full();
        let message = |m: &str| if disk_full { "database or disk is full".into() } else { m.to_string() };
        if torn {
            let _ = control(conn, "ROLLBACK");
            let m =
                message("an operation failed after writing part of its change; its batch was rolled back");
            return Err(BatchError { message: m, disk_full });
        }
        // Some errors (I/O, disk full) make SQLite roll back the whole transaction; what
        // follows would then autocommit piecemeal, so the batch stops here.
        if conn.is_autocommit() {
            let m = message("the transaction was rolled back by SQLite after an error");
            return Err(BatchError { message: m, disk_full });
        }
    }
    if let Err(e) = control(conn, "COMMIT") {
        let _ = control(conn, "ROLLBACK");
        return Err(BatchError::of(&e));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::conflict;
    use rota_store::ConflictKind;
    use std::time::Duration;

    fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::schema::open_writer(&dir.path().join("w.db"), Duration::from_secs(5)).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        (dir, Writer::spawn("test", conn).unwrap())
    }

    /// Every key in `t`, in order.
    async fn keys(w: &Writer) -> Vec<i64> {
        w.run(Durability::Normal, |c| {
            let mut st = c.prepare("SELECT k FROM t ORDER BY k")?;
            let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_failing_op_does_not_roll_back_its_batch() {
        let (_dir, w) = writer();
        // The first op holds the thread so the next ones queue up and share one batch.
        let (started, is_running) = oneshot::channel::<()>();
        let slow = w.run(Durability::Normal, move |c| {
            let _ = started.send(());
            std::thread::sleep(Duration::from_millis(300));
            Ok(c.execute("INSERT INTO t VALUES (0, 'slow')", [])?)
        });
        let queued = async {
            is_running.await.unwrap();
            let ok1 = w.run(Durability::Normal, |c| Ok(c.execute("INSERT INTO t VALUES (1, 'a')", [])?));
            let dup = w.run(Durability::Normal, |c| {
                c.execute("INSERT INTO t VALUES (2, 'b')", [])?;
                Ok(c.execute("INSERT INTO t VALUES (1, 'dup')", [])?)
            });
            let refused = w.run(Durability::Normal, |c| {
                c.execute("INSERT INTO t VALUES (3, 'c')", [])?;
                Err::<usize, _>(conflict(ConflictKind::JobState, "no"))
            });
            let panics = w.run(Durability::Normal, |c| -> Result<usize> {
                c.execute("INSERT INTO t VALUES (4, 'd')", [])?;
                panic!("boom")
            });
            let ok2 = w.run(Durability::Normal, |c| Ok(c.execute("INSERT INTO t VALUES (5, 'e')", [])?));
            tokio::join!(ok1, dup, refused, panics, ok2)
        };
        let (slow, (ok1, dup, refused, panics, ok2)) = tokio::join!(slow, queued);
        assert_eq!(slow.unwrap(), 1);
        assert_eq!(ok1.unwrap(), 1);
        assert!(matches!(dup, Err(rota_store::StoreError::Backend(_))), "{dup:?}");
        assert!(matches!(refused, Err(rota_store::StoreError::Conflict(..))), "{refused:?}");
        assert!(panics.is_err());
        assert_eq!(ok2.unwrap(), 1);
        assert_eq!(w.batches(), 2, "the queued ops should share one batch");
        let keys = keys(&w).await;
        assert_eq!(keys, vec![0, 1, 5]);
    }

    #[tokio::test]
    async fn unsaved_items_refused_before_writing_stand_alone_and_a_torn_one_rolls_back_its_batch() {
        let (_dir, w) = writer();
        // Items: 1 written, 2 refused before writing, 3 written.
        let items = w
            .run_itemised(Durability::Normal, |c| {
                (1..=3)
                    .map(|k| {
                        unsaved_item(c, move |c| {
                            if k == 2 {
                                return Err(conflict(ConflictKind::JobState, "refused"));
                            }
                            Ok(c.execute("INSERT INTO t VALUES (?1, 'x')", [k])?)
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await
            .unwrap();
        assert!(items[0].is_ok() && items[2].is_ok(), "{items:?}");
        assert!(matches!(items[1], Err(rota_store::StoreError::Conflict(..))), "{items:?}");

        // A batch of three: a good op, an item that fails after writing, another good op.
        let (started, is_running) = oneshot::channel::<()>();
        let hold = w.run(Durability::Normal, move |_| {
            let _ = started.send(());
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        let queued = async {
            is_running.await.unwrap();
            let before = w.run(Durability::Normal, |c| Ok(c.execute("INSERT INTO t VALUES (10, 'a')", [])?));
            let torn = w.run_itemised(Durability::Normal, |c| {
                unsaved_item(c, |c| {
                    c.execute("INSERT INTO t VALUES (11, 'half')", [])?;
                    Ok(c.execute("INSERT INTO t VALUES (1, 'taken')", [])?)
                })
            });
            let after = w.run(Durability::Normal, |c| Ok(c.execute("INSERT INTO t VALUES (12, 'c')", [])?));
            tokio::join!(before, torn, after)
        };
        let (held, (before, torn, after)) = tokio::join!(hold, queued);
        held.unwrap();
        assert!(torn.is_err(), "{torn:?}");
        assert!(
            before.is_err() && after.is_err(),
            "every op of a rolled-back batch fails: {before:?} {after:?}"
        );
        let keys = keys(&w).await;
        assert_eq!(keys, vec![1, 3], "nothing of the rolled-back batch is kept");
    }

    #[tokio::test]
    async fn in_a_mixed_batch_the_quick_ops_commit_before_the_durable_ones() {
        let (_dir, w) = writer();
        let (started, is_running) = oneshot::channel::<()>();
        let hold = w.run(Durability::Normal, move |_| {
            let _ = started.send(());
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        let level = |c: &Connection| Ok(c.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?);
        let queued = async {
            is_running.await.unwrap();
            // Queued durable first, quick second: the quick one still commits first.
            let durable = w.run(Durability::Full, move |c| {
                let seen: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
                Ok((seen, level(c)?))
            });
            let quick = w.run(Durability::Normal, move |c| {
                c.execute("INSERT INTO t VALUES (1, 'q')", [])?;
                level(c)
            });
            tokio::join!(durable, quick)
        };
        let (held, (durable, quick)) = tokio::join!(hold, queued);
        held.unwrap();
        assert_eq!(quick.unwrap(), 1, "the quick op ran with synchronous=NORMAL");
        assert_eq!(durable.unwrap(), (1, 2), "the durable op ran after it, with synchronous=FULL");
        assert_eq!(w.batches(), 3, "one transaction for the first op, then one per durability");
    }

    #[tokio::test]
    async fn durable_batches_sync_fully_and_cheap_ones_do_not() {
        let (_dir, w) = writer();
        let level = |c: &Connection| Ok(c.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?);
        assert_eq!(w.run(Durability::Normal, level).await.unwrap(), 1, "NORMAL");
        assert_eq!(w.run(Durability::Full, level).await.unwrap(), 2, "FULL");
        assert_eq!(w.run(Durability::Normal, level).await.unwrap(), 1, "back to NORMAL");
    }
}
