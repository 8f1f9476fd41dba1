//! [`Proc`]: a background process whose stderr is collected line by line (and optionally
//! handed to a tap), started and optionally waited for until it prints a readiness line.
//! On drop it is stopped (TERM, then KILL after 10 s; or KILL at once if so marked).

use crate::KitError;
use crate::env::bound;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// What is done with each stderr line besides the readiness check.
pub type Tap = Box<dyn FnMut(&str) + Send>;

/// A background process whose stderr is collected; stopped on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    output: Arc<Mutex<String>>,
    kill_on_drop: bool,
}

impl Proc {
    /// Spawns `cmd` without waiting for anything (its stderr is collected).
    pub fn start(cmd: Command) -> Proc {
        Self::try_start(cmd, None, true, None).unwrap_or_else(|e| panic!("{e}")).0
    }

    /// Spawns `cmd` and waits until a stderr line contains `ready`; returns that line.
    pub fn spawn(cmd: Command, ready: &str) -> (Proc, String) {
        Self::try_spawn(cmd, ready, bound(), true, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Proc::spawn`], as a `Result`, with its own bound; `keep` false does not
    /// collect stderr (long runs) and `tap` sees every line.
    pub(crate) fn try_spawn(
        cmd: Command,
        ready: &str,
        within: Duration,
        keep: bool,
        tap: Option<Tap>,
    ) -> Result<(Proc, String), KitError> {
        let program = std::path::PathBuf::from(cmd.get_program());
        let (mut proc, rx) = Self::try_start(cmd, Some(ready), keep, tap)?;
        match rx.recv_timeout(within) {
            Ok(line) => Ok((proc, line)),
            Err(_) => {
                proc.kill();
                Err(KitError::NotReady { program, ready: ready.into(), within, output: proc.output() })
            }
        }
    }

    fn try_start(
        mut cmd: Command,
        ready: Option<&str>,
        keep: bool,
        mut tap: Option<Tap>,
    ) -> Result<(Proc, mpsc::Receiver<String>), KitError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let program = std::path::PathBuf::from(cmd.get_program());
        let mut child = cmd.spawn().map_err(|source| KitError::Spawn { program, source })?;
        let stderr = child.stderr.take().expect("piped stderr");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let (sink, wanted) = (output.clone(), ready.map(str::to_string));
        // Drained for the process's whole life: a full pipe would stall it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if wanted.as_ref().is_some_and(|w| line.contains(w.as_str())) {
                    let _ = tx.send(line.clone());
                }
                if let Some(tap) = tap.as_mut() {
                    tap(&line);
                }
                if keep {
                    let mut s = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Ok((Proc { child, output, kill_on_drop: false }, rx))
    }

    /// Makes drop KILL at once instead of asking first (for workers whose clean shutdown
    /// would wait for their steps).
    pub fn kill_on_drop(mut self) -> Self {
        self.kill_on_drop = true;
        self
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Everything it wrote to stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, ...).
    pub fn signal(&self, sig: &str) {
        crate::procs::kill(sig, self.pid());
    }

    /// KILLs it (if still running) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit; `None` if it was killed by a signal. Panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if start.elapsed() > within {
                self.kill();
                panic!("pid {} did not exit within {within:?}; stderr:\n{}", self.pid(), self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        self.signal("TERM");
        self.wait_exit(within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if !self.kill_on_drop {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }
}
