//! Everything written to stdout goes through [`Out`], which turns a closed pipe
//! (`rota job list | head -1`) into a quiet exit 0 instead of a panic or an error message.
//! Tables are plain text (bold headers only on a colour terminal); `--json` prints the
//! API's own body, pretty. Notes for people go to stderr via [`note`].

use crate::failure::StdoutClosed;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use comfy_table::{Attribute, Cell, ContentArrangement, Table};
use serde::Serialize;
use std::io::{self, IsTerminal, Write};

/// Stdout. Never use `println!`: it panics on a closed pipe.
pub(crate) struct Out {
    stdout: io::Stdout,
}

impl Out {
    pub(crate) fn new() -> Self {
        Self { stdout: io::stdout() }
    }

    /// Lets `write!`/`writeln!` be used on an `Out`, with our error type.
    pub(crate) fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> Result<()> {
        closed_pipe_quiet(self.stdout.lock().write_fmt(args))
    }

    /// Writes bytes as they are (log output).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        closed_pipe_quiet(self.stdout.lock().write_all(bytes))
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        closed_pipe_quiet(self.stdout.lock().flush())
    }

    /// Pretty JSON and a newline.
    pub(crate) fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
        writeln!(self, "{text}")
    }

    /// A table built by [`table`].
    pub(crate) fn table(&mut self, table: &Table) -> Result<()> {
        writeln!(self, "{}", table.trim_fmt())
    }
}

fn closed_pipe_quiet(r: io::Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// A line for people on stderr (progress, notices). Failing to write it is not an error.
pub(crate) fn note(line: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Whether stdout is a terminal that wants colour (not when NO_COLOR is set).
fn colour() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A borderless table with these headers, columns two spaces apart.
pub(crate) fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    let bold = colour();
    if !bold {
        t.force_no_tty();
    }
    t.set_header(headers.iter().map(|h| {
        let c = Cell::new(h);
        if bold { c.add_attribute(Attribute::Bold) } else { c }
    }));
    let n = headers.len();
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 2 }));
    }
    t
}

pub(crate) use rota_domain::units::age;

/// A duration between two instants, coarse: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn span(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{}m{:02}s", m / 60_000, (m / 1000) % 60),
        m => format!("{}h{:02}m", m / 3_600_000, (m / 60_000) % 60),
    }
}

/// A byte count for people: `512 B`, `64.0 KiB`, `132.9 MiB`, `2.0 GiB`.
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `-` for nothing.
pub(crate) fn or_dash(s: Option<&str>) -> &str {
    match s {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_spans() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(age(now - chrono::Duration::minutes(5), now), "5m");
        assert_eq!(age(now - chrono::Duration::hours(5), now), "5h");
        assert_eq!(age(now - chrono::Duration::days(5), now), "5d");
        assert_eq!(span(now, now + chrono::Duration::milliseconds(12_345)), "12.3s");
        assert_eq!(span(now, now + chrono::Duration::seconds(245)), "4m05s");
    }

    #[test]
    fn plain_table() {
        let mut t = table(&["ID", "STATE"]);
        t.add_row(vec!["a", "queued"]);
        t.add_row(vec!["bbbb", "succeeded"]);
        assert_eq!(t.trim_fmt(), "ID    STATE\na     queued\nbbbb  succeeded");
    }
}
