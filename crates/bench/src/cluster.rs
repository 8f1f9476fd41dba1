//! A throwaway rota server (and workers) for one measurement: own temp dir, port 0, the
//! tokens it generates. Killed on drop.

use anyhow::{Context, Result, bail};
use rota_client::Client;
use rota_worker::procfs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct BenchCluster {
    pub(crate) dir: tempfile::TempDir,
    rota: PathBuf,
    server: Child,
    pub(crate) url: String,
    pub(crate) join_token: String,
    pub(crate) client: Client,
    workers: Vec<Child>,
}

impl BenchCluster {
    pub(crate) async fn start(rota: &Path) -> Result<Self> {
        Self::start_with(rota, &[])
    }

    /// Like [`BenchCluster::start`], with `server_flags` added to `rota server`.
    pub(crate) fn start_with(rota: &Path, server_flags: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let sp = spawn_server(rota, dir.path(), server_flags, |_| {})?;
        let client = Client::new(&sp.url, Some(sp.admin))?;
        Ok(Self {
            dir,
            rota: rota.to_path_buf(),
            server: sp.child,
            url: sp.url,
            join_token: sp.join_token,
            client,
            workers: Vec::new(),
        })
    }

    /// Launches `rota worker run`; returns its pid at once (the caller times from here).
    pub(crate) fn launch_worker(&mut self, name: &str, concurrency: u32) -> Result<u32> {
        self.launch_worker_with(name, concurrency, &[])
    }

    /// Launches `rota worker run` with `extra` arguments; returns its pid at once.
    pub(crate) fn launch_worker_with(&mut self, name: &str, concurrency: u32, extra: &[&str]) -> Result<u32> {
        let child = self.worker_command(name, concurrency, extra, "warn").stderr(Stdio::inherit()).spawn();
        let child = child.with_context(|| format!("starting rota worker {name}"))?;
        let pid = child.id();
        self.workers.push(child);
        Ok(pid)
    }

    /// SIGKILLs the worker with `pid` (std's `Child::kill` sends SIGKILL) and reaps it.
    pub(crate) fn kill_worker(&mut self, pid: u32) -> Result<()> {
        let child = self.workers.iter_mut().find(|c| c.id() == pid).context("no such worker")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The command that runs a worker named `name` against this server (workspace
    /// `<dir>/ws-<name>`, log filter `log`), for callers that need its stderr or its pid.
    pub(crate) fn worker_command(&self, name: &str, concurrency: u32, extra: &[&str], log: &str) -> Command {
        let ws = self.dir.path().join(format!("ws-{name}"));
        let mut cmd = Command::new(&self.rota);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("ROTA_LOG", log)
            .args(["worker", "run", "--server", &self.url, "--join-token", &self.join_token, "--name", name])
            .args(["--concurrency", &concurrency.to_string(), "--workspace"])
            .arg(ws)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Adopts a worker the caller spawned itself (killed with the cluster).
    pub(crate) fn adopt_worker(&mut self, child: Child) {
        self.workers.push(child);
    }

    /// The pid of the server process.
    pub(crate) fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// Resident memory of the first worker, in bytes.
    pub(crate) fn worker_rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.workers.first()?.id())
    }

    /// Waits until a worker named `name` is registered.
    pub(crate) async fn wait_registered(&self, name: &str) -> Result<()> {
        for _ in 0..600 {
            if let Ok(list) = self.client.list_workers().await
                && list.workers.iter().any(|w| w.name == name)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("worker {name} did not register")
    }

    /// CPU time used so far by the server process.
    pub(crate) fn server_cpu(&self) -> Result<CpuTimes> {
        CpuTimes::of(self.server.id())
    }

    /// CPU time used so far by the first worker process (its own and its reaped steps').
    pub(crate) fn worker_cpu(&self) -> Result<CpuTimes> {
        CpuTimes::of(self.workers.first().context("no worker launched")?.id())
    }

    /// A counter from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> Result<u64> {
        let text = self.client.metrics_text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .with_context(|| format!("metric {name} missing"))
    }
}

/// A `rota server` process started by [`spawn_server`], with what it printed and wrote.
pub(crate) struct SpawnedServer {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) join_token: String,
}

/// Starts `rota server` on port 0 with its data under `dir` (database `dir/rota.db`) plus
/// `extra` flags, waits for its URL and reads the tokens it created. Its log is drained for
/// the server's whole life (a full pipe would stall it), each line also handed to
/// `on_line`. The server is killed if it does not come up.
pub(crate) fn spawn_server(
    rota: &Path,
    dir: &Path,
    extra: &[&str],
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Result<SpawnedServer> {
    let mut child = Command::new(rota)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("ROTA_LOG", "warn,rota_server=info")
        .args(["server", "--listen", "127.0.0.1:0", "--database"])
        .arg(dir.join("rota.db"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rota server")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(pos) = line.find("http://") {
                let _ = tx.send(line[pos..].split_whitespace().next().unwrap_or("").to_string());
                sent = true;
            }
            on_line(&line);
        }
    });
    let read = |f: &str| std::fs::read_to_string(dir.join("data/rota").join(f)).map(|s| s.trim().to_string());
    let up = rx.recv_timeout(Duration::from_secs(30)).context("server printed no URL").and_then(|url| {
        let admin = read("admin.token").context("reading admin.token")?;
        let join_token = read("join.token").context("reading join.token")?;
        Ok((url, admin, join_token))
    });
    match up {
        Ok((url, admin, join_token)) => Ok(SpawnedServer { child, url, admin, join_token }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Resident memory (`VmRSS`) of `pid` (as `std::process` numbers it) in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    procfs::rss_bytes(i32::try_from(pid).ok()?)
}

/// CPU seconds of a process from `/proc/<pid>/stat`: its own (user + system) and that of
/// its children it has waited for (a worker's steps).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuTimes {
    pub(crate) own: f64,
    pub(crate) children: f64,
}

impl CpuTimes {
    pub(crate) fn of(pid: u32) -> Result<Self> {
        let s = procfs::read_stat(i32::try_from(pid)?)?;
        // Fields 14-17 are in USER_HZ, which the kernel ABI fixes at 100 on Linux.
        let secs = |ticks: u64| ticks as f64 / 100.0;
        Ok(Self { own: secs(s.utime + s.stime), children: secs(s.cutime + s.cstime) })
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
