//! The last lines of a worker's log, for error messages, heal events and `rota worker
//! logs`: read from a byte offset (what this start appended), bounded in bytes so a huge
//! log never costs more than a small read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this much of the log's end is read.
const TAIL_BYTES: u64 = 16 * 1024;

/// The log's length now (0 if it does not exist): the offset a later tail starts from.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `n` non-empty lines written at or after byte `from`.
pub fn tail(path: &Path, from: u64, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else { return Vec::new() };
    let end = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.min(end).max(end.saturating_sub(TAIL_BYTES));
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.take(TAIL_BYTES).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // A cut in the middle of a line is not worth showing.
    if start > from && start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| strip_ansi(l)).collect()
}

/// The most telling line written at or after `from`: the last warning or error (a worker
/// retrying says why), else the last line; at most 220 characters.
pub fn last_problem(path: &Path, from: u64) -> Option<String> {
    let lines = tail(path, from, 40);
    let pick = lines
        .iter()
        .rev()
        .find(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.starts_with("rota: "))
        .or(lines.last())?;
    Some(pick.chars().take(220).collect())
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        assert!(tail(&p, 0, 3).is_empty());
        std::fs::write(&p, "old 1\nold 2\n").unwrap();
        let from = len(&p);
        std::fs::write(&p, "old 1\nold 2\nnew 1\n\nnew \u{1b}[31m2\u{1b}[0m\n").unwrap();
        assert_eq!(tail(&p, from, 5), ["new 1", "new 2"]);
        assert_eq!(tail(&p, 0, 2), ["new 1", "new 2"]);
        assert_eq!(last_problem(&p, from).as_deref(), Some("new 2"));
    }
}
