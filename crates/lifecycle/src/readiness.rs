//! The readiness pipe (s6's notification-fd): the waiter passes a pipe as the child's stdout
//! with `ROTA_READY_FD=1`; the child writes one JSON line when ready (the worker: after it
//! registered) or failed. EOF before a line = it died. fd 1, because adopting any other
//! inherited fd would need `unsafe`; the child then points its stdout at stderr.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::Duration;

/// The variable naming the readiness fd (always 1).
pub const READY_FD_ENV: &str = "ROTA_READY_FD";

/// Why something did not become ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    /// The server refused the worker, or its configuration is invalid (exit 78).
    Refused,
    /// It did not register before the deadline and was stopped.
    Timeout,
    /// It exited before registering.
    Exited,
    /// The worker could not be spawned, or the supervisor could not set up.
    Spawn,
    /// Another supervisor already holds the instance lock.
    Locked,
}

/// The one line written on the readiness pipe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyLine {
    /// Ready (true) or given up (false).
    pub ok: bool,
    /// The worker's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The supervisor's pid (supervisor → start only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    /// The control port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The registered name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Why not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<NotReady>,
    /// What went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker's exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl ReadyLine {
    /// A failure line.
    pub fn failed(code: NotReady, error: impl Into<String>, exit_code: Option<i32>) -> Self {
        Self { ok: false, code: Some(code), error: Some(error.into()), exit_code, ..Self::default() }
    }
}

/// Takes the readiness pipe this process was given as stdout, if `ROTA_READY_FD=1`:
/// returns a close-on-exec copy and points fd 1 at stderr, so that no child inherits the
/// pipe and EOF really means "gone".
pub fn take_from_stdout() -> Option<File> {
    match std::env::var(READY_FD_ENV).ok()?.as_str() {
        "1" => {}
        other => {
            tracing::warn!("{READY_FD_ENV}={other}: only fd 1 is supported; readiness will not be reported");
            return None;
        }
    }
    let pipe = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    if let Err(e) = rustix::stdio::dup2_stdout(std::io::stderr()) {
        tracing::warn!("cannot point stdout at stderr: {e}");
    }
    Some(File::from(pipe))
}

/// Writes `line` and closes the pipe. A reader that went away is not an error.
pub fn send(mut pipe: File, line: &ReadyLine) {
    if let Ok(mut text) = serde_json::to_string(line) {
        text.push('\n');
        let _ = pipe.write_all(text.as_bytes());
    }
}

/// What waiting on a readiness pipe gave.
#[derive(Debug)]
pub enum Waited {
    /// A line.
    Line(ReadyLine),
    /// EOF (or garbage) before a line: the writer is gone.
    Closed(String),
    /// Nothing by the deadline.
    TimedOut,
}

/// Reads one line from `pipe`, waiting at most `timeout`.
pub fn wait_line(pipe: impl Read + Send + 'static, timeout: Duration) -> Waited {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let res = BufReader::new(pipe).read_line(&mut line);
        let _ = tx.send(res.map(|_| line));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if line.trim().is_empty() => Waited::Closed("closed without a word".into()),
        Ok(Ok(line)) => match serde_json::from_str::<ReadyLine>(line.trim()) {
            Ok(l) => Waited::Line(l),
            Err(e) => Waited::Closed(format!("wrote an unreadable line ({e})")),
        },
        Ok(Err(e)) => Waited::Closed(format!("cannot be read ({e})")),
        Err(mpsc::RecvTimeoutError::Timeout) => Waited::TimedOut,
        Err(mpsc::RecvTimeoutError::Disconnected) => Waited::Closed("reader failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_eof_and_a_timeout_are_told_apart() {
        let (r, w) = std::io::pipe().unwrap();
        let line = ReadyLine { ok: true, pid: Some(7), port: Some(9), ..ReadyLine::default() };
        send(File::from(std::os::fd::OwnedFd::from(w)), &line);
        assert!(matches!(wait_line(r, Duration::from_secs(5)), Waited::Line(l) if l == line));

        let (r, w) = std::io::pipe().unwrap();
        drop(w);
        assert!(matches!(wait_line(r, Duration::from_secs(5)), Waited::Closed(_)));

        let (r, _w) = std::io::pipe().unwrap();
        assert!(matches!(wait_line(r, Duration::from_millis(50)), Waited::TimedOut));

        let f = ReadyLine::failed(NotReady::Refused, "bad token", Some(78));
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"ok":false,"code":"refused","error":"bad token","exitCode":78}"#);
    }
}
