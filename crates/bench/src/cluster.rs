//! A throwaway rota server (and workers) for one measurement: own temp dir, port 0, the
//! tokens it generates, its own database on the process's backend (`store`). Killed on
//! drop, before its database is dropped.

use crate::store::Database;
use anyhow::{Context, Result, bail};
use rota_client::{CaCerts, Client, WorkerClient};
use rota_testkit::{Proc, server};
use rota_worker::procfs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct BenchCluster {
    pub(crate) dir: tempfile::TempDir,
    rota: PathBuf,
    server: Proc,
    pub(crate) url: String,
    pub(crate) join_token: String,
    pub(crate) client: Client,
    /// With `--tls`: the CA file workers get as `--ca-cert`, and what the bench's clients trust.
    ca: Option<(PathBuf, CaCerts)>,
    workers: Vec<Child>,
    /// Dropped after `Drop::drop` killed the server and workers (fields drop last).
    db: Database,
}

impl BenchCluster {
    pub(crate) async fn start(rota: &Path) -> Result<Self> {
        Self::start_with(rota, &[])
    }

    /// Like [`BenchCluster::start`], with `server_flags` added to `rota server`.
    pub(crate) fn start_with(rota: &Path, server_flags: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = Database::create(dir.path())?;
        let mut flags: Vec<String> = server_flags.iter().map(|f| f.to_string()).collect();
        let tls = crate::tls::on().then(|| crate::tls::Files::issue(dir.path()));
        if let Some(files) = &tls {
            flags.extend(files.server_flags());
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let sp = spawn_server(rota, dir.path(), &db.arg(), &flags, |_| {})?;
        let ca = match tls {
            Some(files) => Some((files.ca.clone(), files.trust()?)),
            None => None,
        };
        let trust = ca.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
        let client = Client::trusting(&sp.url, Some(sp.admin), &trust)?;
        Ok(Self {
            dir,
            rota: rota.to_path_buf(),
            server: sp.proc,
            url: sp.url,
            join_token: sp.join_token,
            client,
            ca,
            workers: Vec::new(),
            db,
        })
    }

    /// What the bench's own clients trust: the run's CA with `--tls`, else the system roots.
    fn trust(&self) -> CaCerts {
        self.ca.as_ref().map(|(_, c)| c.clone()).unwrap_or_default()
    }

    /// An operator client of its own (its own connection pool) with `token`.
    pub(crate) fn operator_client(&self, token: String) -> Result<Client> {
        Ok(Client::trusting(&self.url, Some(token), &self.trust())?)
    }

    /// A synthetic worker-protocol client of its own.
    pub(crate) fn worker_client(&self) -> Result<WorkerClient> {
        Ok(WorkerClient::trusting(&self.url, &self.trust())?)
    }

    /// The server's database.
    pub(crate) fn database(&self) -> &Database {
        &self.db
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
            .args(self.ca.iter().flat_map(|(file, _)| [std::ffi::OsStr::new("--ca-cert"), file.as_os_str()]))
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
        self.server.pid().unsigned_abs()
    }

    /// Resident memory of the first worker with its spawner helpers, in bytes.
    pub(crate) fn worker_rss_bytes(&self) -> Option<u64> {
        worker_rss_bytes(self.workers.first()?.id())
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
        CpuTimes::of(self.server.pid().unsigned_abs())
    }

    /// CPU time used so far by the first worker process (its own and its reaped steps').
    pub(crate) fn worker_cpu(&self) -> Result<CpuTimes> {
        CpuTimes::of(self.workers.first().context("no worker launched")?.id())
    }

    /// A counter from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> Result<u64> {
        let text = self.client.metrics_text().await?;
        metric_sum(&text, name).with_context(|| format!("metric {name} missing"))
    }
}

/// The value of counter `name` in a `/metrics` text, summed over its labels
/// (`rota_attempts_lost_total{cause=…}`, `rota_attempts_completed_total{outcome=…}`).
pub(crate) fn metric_sum(text: &str, name: &str) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit_once(' ')?.1.parse::<f64>().ok().map(|v| v as u64)
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A `rota server` process started by [`spawn_server`], with what it printed and wrote.
pub(crate) struct SpawnedServer {
    pub(crate) proc: Proc,
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) join_token: String,
}

/// Starts `rota server` on port 0 with its data under `dir` and `--database database`, plus
/// `extra` flags, through the test kit's one way to start a server; reads the tokens it
/// created. Its log is drained for the server's whole life, each line handed to `on_line`
/// (not kept). The server is killed if it does not come up.
pub(crate) fn spawn_server(
    rota: &Path,
    dir: &Path,
    database: &str,
    extra: &[&str],
    on_line: impl FnMut(&str) + Send + 'static,
) -> Result<SpawnedServer> {
    let mut args = vec!["--database".to_string(), database.to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let spec = server::Spec {
        args,
        log_filter: "warn,rota_server=info".into(),
        keep_output: false,
        tap: Some(Box::new(on_line)),
        ..server::Spec::new(rota, dir)
    };
    let mut up = server::start(spec).context("starting rota server")?;
    let tokens = server::Server::admin_token(dir).and_then(|a| Ok((a, server::Server::join_token(dir)?)));
    match tokens {
        Ok((admin, join_token)) => Ok(SpawnedServer { proc: up.proc, url: up.url, admin, join_token }),
        Err(e) => {
            up.proc.kill();
            Err(e.into())
        }
    }
}

/// Resident memory of a worker with its live child processes, in bytes. Taken when the
/// worker runs no step, its children are its spawner helpers (the processes that start its
/// steps): their memory is the worker's cost too, so the figure counts it. A helper runs the
/// worker's own executable, so its file-backed pages are the worker's (counted once, in the
/// worker's `VmRSS`); what it adds is its private memory.
pub(crate) fn worker_rss_bytes(pid: u32) -> Option<u64> {
    let own = rss_bytes(pid)?;
    let children = procfs::children_of(i32::try_from(pid).ok()?);
    Some(own + children.iter().filter_map(|c| procfs::private_rss_bytes(c.pid)).sum::<u64>())
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
        self.server.kill();
    }
}
