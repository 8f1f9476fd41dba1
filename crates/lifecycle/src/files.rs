//! Small, careful file operations for worker files: atomic writes (temp file in the same
//! directory, fsync, rename, fsync of the directory), versioned JSON that is quarantined
//! as `*.<time>.corrupt` when it cannot be trusted, and pid files. No policy lives here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The only version of the state files this binary writes and trusts (the settings files
/// have their own, see `saved.rs`).
pub const FILE_VERSION: u64 = 1;

/// Writes `bytes` to `path` atomically with `mode`: a reader sees the old or the new file,
/// never a mix, and the new one survives a crash of the machine once this returns.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), rand::random::<u32>()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// `value` as pretty JSON, written with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, mode)
}

/// What reading a versioned JSON file found.
#[derive(Debug)]
pub enum Loaded<T> {
    /// There is no such file.
    Missing,
    /// The file, parsed.
    Found(T),
    /// The file could not be trusted and was moved aside.
    Quarantined {
        /// Where it is now.
        to: PathBuf,
        /// Why it was not trusted.
        why: String,
    },
}

/// Reads a JSON file whose `version` must be [`FILE_VERSION`]. An unreadable, corrupt or
/// unknown-version file is moved to `<file>.<time>.corrupt` and reported, never trusted.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> io::Result<Loaded<T>> {
    load_with(path, |bytes| parse_versioned(bytes, FILE_VERSION))
}

/// [`load_json`] with the caller's parser (one that knows older versions, say): what it
/// refuses is quarantined like a corrupt file.
pub fn load_with<T>(path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> io::Result<Loaded<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match parse(&bytes) {
        Ok(v) => Ok(Loaded::Found(v)),
        Err(why) => {
            let to = quarantine(path)?;
            Ok(Loaded::Quarantined { to, why })
        }
    }
}

/// Reads a versioned JSON file without touching it (read-only callers: heal's detector,
/// diagnose). `Ok(None)` when missing; `Err` says why it cannot be trusted.
pub fn peek_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    peek_with(path, |bytes| parse_versioned(bytes, FILE_VERSION))
}

/// [`peek_json`] with the caller's parser.
pub fn peek_with<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match fs::read(path) {
        Ok(bytes) => parse(&bytes).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses JSON whose `version` must be `version`.
pub fn parse_versioned<T: DeserializeOwned>(bytes: &[u8], version: u64) -> Result<T, String> {
    let (found, value) = versioned_value(bytes)?;
    if found != version {
        return Err(format!("unknown version {found} (this rota understands {version})"));
    }
    serde_json::from_value(value).map_err(|e| format!("unexpected content ({e})"))
}

/// JSON with its `version` field read, for parsers that accept several versions.
pub fn versioned_value(bytes: &[u8]) -> Result<(u64, serde_json::Value), String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) => Ok((v, value)),
        None => Err("no version field".into()),
    }
}

/// How many quarantined copies of one file are kept (the oldest go first): enough to
/// compare a few bad versions, never an unbounded pile.
pub const QUARANTINE_KEEP: usize = 5;

/// Moves `path` aside to `<path>.<UTC time>.corrupt` (a `-N` suffix if that name is
/// taken), never replacing an earlier copy; keeps the newest [`QUARANTINE_KEEP`] copies.
/// Returns the new path.
pub fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    // Nanoseconds: copies made in the same millisecond (a loop of restarts) get distinct
    // names, so a pruned name is never reused for a newer copy.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
    let mut n = 1;
    let to = loop {
        let suffix = if n == 1 { String::new() } else { format!("-{n}") };
        let to = path.with_file_name(format!("{name}.{stamp}{suffix}.corrupt"));
        // A hard link never replaces an existing file (a rename would).
        match fs::hard_link(path, &to) {
            Ok(()) => break to,
            Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => n += 1,
            // Someone else quarantined it first.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(to),
            Err(e) => return Err(e),
        }
    };
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    prune_quarantined(path, &name);
    Ok(to)
}

/// Deletes all but the newest [`QUARANTINE_KEEP`] quarantined copies of `name` (including
/// the `<name>.corrupt` of older releases). Best effort: a copy left over is harmless.
fn prune_quarantined(path: &Path, name: &str) {
    let Some(dir) = path.parent() else { return };
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = format!("{name}.");
    let mut copies: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".corrupt")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(QUARANTINE_KEEP);
    for (_, old) in copies.into_iter().take(excess) {
        let _ = fs::remove_file(old);
    }
}

/// Reads the pid in a pid file: `Ok(None)` when there is no file, `Err` text when its
/// content is not a pid.
pub fn read_pidfile(path: &Path) -> io::Result<Option<Result<i32, String>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let first = text.lines().next().unwrap_or_default().trim();
    Ok(Some(match first.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(format!("'{}' is not a pid", first.chars().take(40).collect::<String>())),
    }))
}

/// Writes `pid` as a plain pid file (0644, for external tools).
pub fn write_pidfile(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    write_atomic(path, format!("{pid}\n").as_bytes(), 0o644)
}

/// Removes the pid file if it still names `pid` (someone else's is left alone).
pub fn remove_pidfile_of(path: &Path, pid: i32) {
    if let Ok(Some(Ok(p))) = read_pidfile(path)
        && p == pid
    {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Doc {
        version: u64,
        name: String,
    }

    #[test]
    fn atomic_json_round_trips_and_bad_files_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        assert!(matches!(load_json::<Doc>(&path).unwrap(), Loaded::Missing));
        let doc = Doc { version: FILE_VERSION, name: "a".into() };
        write_json(&path, &doc, 0o600).unwrap();
        assert!(matches!(load_json::<Doc>(&path).unwrap(), Loaded::Found(d) if d == doc));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left behind");

        for (bad, why) in [
            (&b"{\"version\": 1, \"na"[..], "not JSON"),
            (b"", "not JSON"),
            (b"{\"version\": 99, \"name\": \"a\"}", "unknown version 99"),
            (b"{\"name\": \"a\"}", "no version"),
        ] {
            fs::write(&path, bad).unwrap();
            match load_json::<Doc>(&path).unwrap() {
                Loaded::Quarantined { to, why: got } => {
                    assert!(got.contains(why), "{got}");
                    let to_name = to.file_name().unwrap().to_string_lossy().into_owned();
                    assert!(to_name.starts_with("w.json.") && to_name.ends_with(".corrupt"), "{to_name}");
                    assert_eq!(fs::read(&to).unwrap(), bad);
                    assert!(!path.exists());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn every_quarantined_copy_is_kept_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        let mut moved = Vec::new();
        for i in 0..QUARANTINE_KEEP + 2 {
            fs::write(&path, format!("bad {i}")).unwrap();
            moved.push(quarantine(&path).unwrap());
        }
        let kept: Vec<_> = moved.iter().filter(|p| p.exists()).collect();
        assert_eq!(kept.len(), QUARANTINE_KEEP, "{moved:?}");
        // The newest are the ones kept, each with its own content.
        for (i, p) in moved.iter().enumerate().skip(2) {
            assert_eq!(fs::read_to_string(p).unwrap(), format!("bad {i}"));
        }
    }

    #[test]
    fn pidfiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/w.pid");
        assert!(read_pidfile(&path).unwrap().is_none());
        write_pidfile(&path, 42).unwrap();
        assert_eq!(read_pidfile(&path).unwrap(), Some(Ok(42)));
        remove_pidfile_of(&path, 43);
        assert!(path.exists());
        remove_pidfile_of(&path, 42);
        assert!(!path.exists());
        fs::write(&path, "garbage").unwrap();
        assert!(read_pidfile(&path).unwrap().unwrap().is_err());
    }
}
