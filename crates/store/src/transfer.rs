//! Copying a whole control plane from one backend to another (`rota migrate`): the tables
//! and columns that are copied (and those deliberately not), the rows as plain values, the
//! [`Exporter`] a source backend implements, the [`Importer`] a target implements, and
//! [`copy`], which drives one into the other. Owns no SQL and no driver type: each backend
//! maps [`Kind`]s to its own column types. Must not apply job rules: rows are copied as
//! they are, ids and fencing ids included.

use async_trait::async_trait;
use std::time::{Duration, Instant};

/// How a column's values are represented while copied, whatever each backend stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    Text,
    /// A 64-bit integer (counts, sizes, fencing ids, signals).
    Int,
    /// A flag (`Int` 0 or 1 in transit).
    Bool,
    /// An instant, as unix milliseconds (`Int` in transit).
    Time,
    /// A JSON document (`Text` in transit).
    Json,
    /// A list of strings (`Text` holding a JSON array in transit).
    TextList,
    /// A UUID (`Text` in transit).
    Uuid,
    /// Bytes, copied exactly.
    Bytes,
}

/// One copied column.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Its name, the same in every backend.
    pub name: &'static str,
    /// Its representation in transit.
    pub kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// Which database file of a SQLite store holds a table (PostgreSQL has one database).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Jobs, steps, attempts, workers, fleet state, credentials.
    Main,
    /// Log chunks and their per-attempt accounting.
    Logs,
}

/// One copied table.
#[derive(Debug)]
pub struct Table {
    /// Its name, the same in every backend.
    pub name: &'static str,
    /// Where a SQLite store keeps it.
    pub part: Part,
    /// Every copied column, in the order rows carry them.
    pub columns: &'static [Column],
    /// The order rows are read in (parents before children: a key).
    pub order_by: &'static str,
    /// The id sequence the target must advance past the copied ids (and past any id the
    /// source ever issued: fencing ids and log cursors are never reused), with the column.
    pub sequence: Option<Sequence>,
}

/// An id sequence that goes with a table.
#[derive(Clone, Copy, Debug)]
pub struct Sequence {
    /// The column the sequence fills.
    pub column: &'static str,
    /// The target's name for the sequence.
    pub target: &'static str,
}

use Kind::{Bool, Bytes, Int, Json, Text, TextList, Time, Uuid};

/// Every copied table, parents first (the order [`copy`] writes them in).
pub const TABLES: &[Table] = &[
    Table {
        name: "jobs",
        part: Part::Main,
        columns: &[
            col("id", Uuid),
            col("name", Text),
            col("queue", Text),
            col("priority", Int),
            col("target_host", Text),
            col("target_tags", TextList),
            col("idempotency_key", Text),
            col("deadline", Time),
            col("spec", Json),
            col("state", Text),
            col("reason", Text),
            col("created_at", Time),
            col("finished_at", Time),
            col("namespace", Text),
        ],
        order_by: "id",
        sequence: None,
    },
    Table {
        name: "steps",
        part: Part::Main,
        columns: &[
            col("job_id", Uuid),
            col("idx", Int),
            col("name", Text),
            col("state", Text),
            col("reason", Text),
            col("run_after", Time),
            col("attempts_count", Int),
            col("log_cap", Int),
            col("queue", Text),
            col("priority", Int),
            col("target_host", Text),
            col("target_tags", TextList),
            col("namespace", Text),
        ],
        order_by: "job_id, idx",
        sequence: None,
    },
    Table {
        name: "attempts",
        part: Part::Main,
        columns: &[
            col("id", Int),
            col("job_id", Uuid),
            col("step", Text),
            col("number", Int),
            col("session", Uuid),
            col("worker_name", Text),
            col("status", Text),
            col("outcome", Json),
            col("reason", Text),
            col("pid", Int),
            col("lease_expires_at", Time),
            col("stop_cause", Text),
            col("started_at", Time),
            col("finished_at", Time),
            // JSON as text in both backends.
            col("outputs", Text),
        ],
        order_by: "id",
        sequence: Some(Sequence { column: "id", target: "attempt_ids" }),
    },
    Table {
        name: "workers",
        part: Part::Main,
        columns: &[
            col("session", Uuid),
            col("name", Text),
            col("token_hash", Text),
            col("host", Text),
            col("profile", Text),
            col("version", Text),
            col("queues", TextList),
            col("tags", TextList),
            col("concurrency", Int),
            col("status", Text),
            col("pid", Int),
            col("registered_at", Time),
            col("last_heartbeat_at", Time),
            col("instance_id", Text),
            col("namespace", Text),
            col("forgotten_at", Time),
        ],
        order_by: "registered_at, session",
        sequence: None,
    },
    Table {
        name: "revokes",
        part: Part::Main,
        columns: &[
            col("job_id", Uuid),
            col("terminate", Bool),
            col("signal", Int),
            col("expires_at", Time),
            col("created_at", Time),
        ],
        order_by: "job_id",
        sequence: None,
    },
    Table {
        name: "key_revokes",
        part: Part::Main,
        columns: &[
            col("namespace", Text),
            col("idempotency_key", Text),
            col("terminate", Bool),
            col("signal", Int),
            col("expires_at", Time),
            col("created_at", Time),
        ],
        order_by: "namespace, idempotency_key",
        sequence: None,
    },
    Table {
        name: "paused_queues",
        part: Part::Main,
        columns: &[col("namespace", Text), col("queue", Text), col("paused_at", Time)],
        order_by: "namespace, queue",
        sequence: None,
    },
    Table {
        name: "credentials",
        part: Part::Main,
        columns: &[
            col("kind", Text),
            col("hash", Text),
            col("created_at", Time),
            col("rotated_at", Time),
            col("previous_hash", Text),
            col("previous_until", Time),
            col("handover", Text),
        ],
        order_by: "kind",
        sequence: None,
    },
    Table {
        name: "blocked_workers",
        part: Part::Main,
        columns: &[col("namespace", Text), col("name", Text), col("blocked_at", Time)],
        order_by: "namespace, name",
        sequence: None,
    },
    Table {
        name: "resources",
        part: Part::Main,
        // JSON as text in both backends: a spec's canonical text must stay byte-equal.
        columns: &[
            col("kind", Text),
            col("namespace", Text),
            col("name", Text),
            col("labels", Text),
            col("generation", Int),
            col("spec", Text),
            col("status", Text),
            col("created_at", Time),
            col("updated_at", Time),
        ],
        order_by: "kind, namespace, name",
        sequence: None,
    },
    Table {
        name: "schedule_fires",
        part: Part::Main,
        columns: &[
            col("namespace", Text),
            col("schedule", Text),
            col("fire_time", Time),
            col("outcome", Text),
            col("job_id", Uuid),
            col("recorded_at", Time),
        ],
        order_by: "namespace, schedule, fire_time",
        sequence: None,
    },
    Table {
        name: "secret_key",
        part: Part::Main,
        columns: &[
            col("id", Int),
            col("fingerprint", Text),
            col("created_at", Time),
            col("rotated_at", Time),
        ],
        order_by: "id",
        sequence: None,
    },
    Table {
        name: "secrets",
        part: Part::Main,
        // Sealed bytes copied exactly: the target's servers need the same key file.
        columns: &[
            col("namespace", Text),
            col("name", Text),
            col("labels", Text),
            col("generation", Int),
            col("keys", Text),
            col("sealed", Bytes),
            col("key_fingerprint", Text),
            col("created_at", Time),
            col("updated_at", Time),
        ],
        order_by: "namespace, name",
        sequence: None,
    },
    Table {
        name: "log_attempts",
        part: Part::Logs,
        columns: &[
            col("attempt_id", Int),
            col("job_id", Uuid),
            col("step", Text),
            col("bytes_kept", Int),
            col("bytes_cut", Int),
            col("bytes_dropped", Int),
            col("bytes_pruned", Int),
            col("bytes_refused", Int),
        ],
        order_by: "attempt_id",
        sequence: None,
    },
    Table {
        name: "log_chunks",
        part: Part::Logs,
        columns: &[
            col("cursor", Int),
            col("job_id", Uuid),
            col("step", Text),
            col("attempt_id", Int),
            col("attempt_number", Int),
            col("stream", Text),
            col("seq", Int),
            col("size", Int),
            col("data", Bytes),
        ],
        order_by: "cursor",
        sequence: Some(Sequence { column: "cursor", target: "log_cursors" }),
    },
];

/// What a source holds that is deliberately not copied: `(table, column or "*", why)`.
/// A backend's test fails on any table or column that is neither here nor in [`TABLES`].
pub const SKIPPED: &[(&str, &str, &str)] = &[
    ("jobs", "env", "a copy of spec.env, which the spec column carries"),
    ("log_usage", "*", "the sum of log_chunks.size, which the target computes itself"),
    ("schema_migrations", "*", "each backend's own bookkeeping: the target is migrated by its own rota"),
    ("sqlite_sequence", "*", "SQLite's AUTOINCREMENT counters: read as Exporter::sequence_floor"),
];

/// A value in transit (see [`Kind`] for which each kind uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer, flag or time.
    Int(i64),
    /// Text, JSON, a list or a UUID.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// Bytes the value holds, for progress.
    pub fn size(&self) -> u64 {
        match self {
            Value::Null | Value::Int(_) => 8,
            Value::Text(s) => s.len() as u64,
            Value::Bytes(b) => b.len() as u64,
        }
    }
}

/// One row: a value per column of its [`Table`], in order.
pub type Row = Vec<Value>;

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The source is not a rota database this build can read (named, with why).
    #[error("{0}")]
    NotARotaDatabase(String),
    /// The target already holds data (named, with what it holds); nothing was written.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// The source or target failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// A backend that can hand out its rows. Reading is synchronous and may block: [`copy`]
/// runs it on a blocking thread. One consistent snapshot for the whole export.
pub trait Exporter: Send {
    /// How many rows `table` holds (for progress).
    fn count(&mut self, table: &'static Table) -> Result<u64, TransferError>;
    /// Calls `sink` with the rows of `table` in batches, in `order_by` order. A sink error
    /// stops the export and is returned.
    fn export(
        &mut self,
        table: &'static Table,
        sink: &mut dyn FnMut(Vec<Row>) -> Result<(), TransferError>,
    ) -> Result<(), TransferError>;
    /// The highest id the source ever issued for the table's sequence (issued ids may have
    /// been pruned since): the target's sequence starts past it.
    fn sequence_floor(&mut self, table: &'static Table) -> Result<i64, TransferError>;
}

/// A backend that can take rows: all of them in one transaction, so that a copy that
/// fails or is killed leaves the target as it was.
#[async_trait]
pub trait Importer: Send {
    /// Starts the transaction and refuses a target that holds any row of [`TABLES`].
    async fn begin(&mut self) -> Result<(), TransferError>;
    /// Writes one batch of `table`'s rows.
    async fn write(&mut self, table: &'static Table, rows: Vec<Row>) -> Result<(), TransferError>;
    /// Advances the table's sequence past `floor` and the copied ids.
    async fn advance_sequence(&mut self, table: &'static Table, floor: i64) -> Result<(), TransferError>;
    /// Commits everything.
    async fn commit(&mut self) -> Result<(), TransferError>;
    /// Abandons everything written (also what happens if the process dies).
    async fn rollback(&mut self);
}

/// What a copy reports as it goes (a progress bar, a test hook).
pub trait Progress: Send + Sync {
    /// `table` starts; it has `rows` rows.
    fn start(&self, table: &'static Table, rows: u64);
    /// `rows` more rows of `table`, holding `bytes`, were written to the target.
    fn advance(&self, table: &'static Table, rows: u64, bytes: u64);
    /// `table` is done.
    fn finish(&self, table: &'static Table);
}

/// What a copy did, per table.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// `(table, rows, bytes)` in copy order.
    pub tables: Vec<(&'static str, u64, u64)>,
    /// How long the copy took.
    pub elapsed: Duration,
}

/// Batches in flight between the reading thread and the writer.
const IN_FLIGHT: usize = 4;

/// Copies every table of [`TABLES`] from `source` into `target`, in one transaction of the
/// target: on any error nothing is committed. The source is read on a blocking thread while
/// the target writes the previous batch.
pub async fn copy(
    source: Box<dyn Exporter>,
    target: &mut dyn Importer,
    progress: &dyn Progress,
) -> Result<Summary, TransferError> {
    let started = Instant::now();
    target.begin().await?;
    match copy_all(source, target, progress).await {
        Ok(mut summary) => {
            target.commit().await?;
            summary.elapsed = started.elapsed();
            Ok(summary)
        }
        Err(e) => {
            target.rollback().await;
            Err(e)
        }
    }
}

/// What the reading thread sends.
enum Msg {
    Start(&'static Table, u64),
    Rows(&'static Table, Vec<Row>),
    Floor(&'static Table, i64),
}

async fn copy_all(
    mut source: Box<dyn Exporter>,
    target: &mut dyn Importer,
    progress: &dyn Progress,
) -> Result<Summary, TransferError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), TransferError> {
        // A closed channel means the writer failed: its error is the one reported.
        let gone = || TransferError::Store(crate::StoreError::Invalid("the copy stopped".into()));
        for table in TABLES {
            let rows = source.count(table)?;
            tx.blocking_send(Msg::Start(table, rows)).map_err(|_| gone())?;
            source
                .export(table, &mut |batch| tx.blocking_send(Msg::Rows(table, batch)).map_err(|_| gone()))?;
            if table.sequence.is_some() {
                let floor = source.sequence_floor(table)?;
                tx.blocking_send(Msg::Floor(table, floor)).map_err(|_| gone())?;
            }
        }
        Ok(())
    });
    let mut summary = Summary::default();
    let mut current: Option<&'static Table> = None;
    let written = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Start(table, rows) => {
                    if let Some(prev) = current.replace(table) {
                        progress.finish(prev);
                    }
                    progress.start(table, rows);
                    summary.tables.push((table.name, 0, 0));
                }
                Msg::Rows(table, batch) => {
                    let (n, bytes) =
                        (batch.len() as u64, batch.iter().flatten().map(Value::size).sum::<u64>());
                    target.write(table, batch).await?;
                    if let Some(entry) = summary.tables.last_mut() {
                        entry.1 += n;
                        entry.2 += bytes;
                    }
                    progress.advance(table, n, bytes);
                }
                Msg::Floor(table, floor) => target.advance_sequence(table, floor).await?,
            }
        }
        Ok::<(), TransferError>(())
    }
    .await;
    // On a write error the receiver is dropped here, so the reader stops at its next send.
    drop(rx);
    let read = reader.await.map_err(|e| TransferError::Store(crate::StoreError::Backend(Box::new(e))))?;
    written?;
    read?;
    if let Some(last) = current {
        progress.finish(last);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_each_column_once_and_order_by_known_columns() {
        for t in TABLES {
            let mut names: Vec<_> = t.columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.columns.len(), "{}", t.name);
            for key in t.order_by.split(',').map(str::trim) {
                assert!(names.contains(&key), "{}: order by {key}", t.name);
            }
            if let Some(s) = t.sequence {
                assert!(names.contains(&s.column), "{}: sequence column", t.name);
            }
        }
    }
}
