//! `rota migrate --from sqlite:PATH --to postgres://…`: checks the two flags, holds the
//! source's server lock (so no server runs on it meanwhile), opens both stores, runs
//! `rota_store::transfer::copy` with a progress bar per table (on a terminal only) and
//! prints a one-line summary. Must not read or write rows itself: the copying is the store
//! layer's (`SqliteExporter`, `PgImporter`).

use crate::args::MigrateArgs;
use crate::database::{Database, FORMS};
use crate::failure::{EXIT_CONFIG, usage, with_code};
use crate::output::{Out, note};
use anyhow::{Context, Result};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rota_store::transfer::{self, Progress, Table, TransferError};
use rota_store_postgres::{PgOptions, PgStore};
use rota_store_sqlite::SqliteExporter;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) async fn run(args: &MigrateArgs) -> Result<ExitCode> {
    let from = match Database::parse(&args.from, "--from")? {
        Database::Sqlite(path) => path,
        Database::Postgres(_) => {
            return Err(usage(format!(
                "--from: rota migrate copies from SQLite; expected sqlite:PATH (of {FORMS})"
            )));
        }
    };
    let to = match Database::parse(&args.to, "--to")? {
        Database::Postgres(url) => url,
        Database::Sqlite(_) => {
            return Err(usage(
                "--to: rota migrate copies into PostgreSQL; expected postgres://USER@HOST:PORT/DATABASE",
            ));
        }
    };
    if !from.is_file() {
        return Err(usage(format!(
            "--from {}: no such file; expected sqlite:PATH of a rota server's database (the file \
             `rota server` was given with --database, by default rota.db in its data directory)",
            from.display()
        )));
    }
    // The lock a server holds on its file: a running server is refused, and none starts
    // on the source while it is read.
    let _held = super::server::serve_alone(&from).map_err(|e| {
        with_code(
            EXIT_CONFIG,
            anyhow::anyhow!("{e:#}\nrota migrate copies a stopped server's database: stop the server first"),
        )
    })?;
    let source = SqliteExporter::open(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let store = PgStore::connect(to.connect_text(), PgOptions { pool_size: 1, ..PgOptions::default() })
        .await
        .with_context(|| format!("cannot open the PostgreSQL database {to}"))?;
    let mut target =
        store.importer(&to.to_string()).await.with_context(|| format!("cannot connect to {to}"))?;
    let progress = Bars::new(args.test_stall_in());
    let copied = transfer::copy(Box::new(source), &mut target, &progress).await;
    progress.clear();
    let summary = match copied {
        Ok(s) => s,
        Err(TransferError::TargetNotEmpty(why)) => return Err(with_code(EXIT_CONFIG, anyhow::anyhow!(why))),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the copy into {to} failed; nothing was written there (it can be run again)"
            )));
        }
    };
    drop(target);
    store.close();
    let tables: Vec<String> = summary
        .tables
        .iter()
        .map(|(name, rows, bytes)| {
            if *name == "log_chunks" {
                format!("{rows} {name} ({})", HumanBytes(*bytes))
            } else {
                format!("{rows} {name}")
            }
        })
        .collect();
    writeln!(
        Out::new(),
        "migrated {} to {to} in {:.1} s: {}",
        from.display(),
        summary.elapsed.as_secs_f64(),
        tables.join(", ")
    )?;
    note(format_args!(
        "start the servers with --database {to} (the same admin.token and join.token files work); \
         {} is left as it was",
        from.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// A progress bar per table, drawn on stderr when both stdout and stderr are terminals.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
    /// Bytes written of the current table.
    bytes: AtomicU64,
    /// The test hook: stall after the first batch of this table.
    stall_in: Option<String>,
}

impl Bars {
    fn new(stall_in: Option<String>) -> Self {
        let shown = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
        let target = if shown { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            stall_in,
        }
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }

    fn with_bar(&self, table: &Table, f: impl FnOnce(&ProgressBar)) {
        if let Ok(bars) = self.bars.lock()
            && let Some(bar) = bars.get(table.name)
        {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn start(&self, table: &'static Table, rows: u64) {
        let bar = self.multi.add(ProgressBar::new(rows));
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} rows {msg} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(table.name);
        self.bytes.store(0, Ordering::Relaxed);
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(table.name, bar);
        }
    }

    fn advance(&self, table: &'static Table, rows: u64, bytes: u64) {
        self.with_bar(table, |bar| {
            bar.inc(rows);
            // Bytes matter more than rows for logs.
            let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            if table.name == "log_chunks" {
                bar.set_message(HumanBytes(done).to_string());
            }
        });
        if self.stall_in.as_deref() == Some(table.name) {
            note(format_args!("rota migrate: stalled in {} (test hook)", table.name));
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    fn finish(&self, table: &'static Table) {
        self.with_bar(table, ProgressBar::finish);
    }
}
