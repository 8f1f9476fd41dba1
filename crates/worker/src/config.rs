//! The worker's configuration: plain data, validated once by `run`. It owns the defaults
//! (queues, concurrency, timeouts, host name); it must not read flags, files or the
//! environment beyond the host name (that is the CLI's job).

use crate::error::WorkerError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a worker needs to join a server and run steps.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Server address: `host:port`, `http://…` or `https://…`; or a comma-separated list of
    /// them, the servers of one control plane (calls fail over between them).
    pub server: String,
    /// CA certificates trusted besides the system roots when `server` is `https://`.
    pub ca: rota_client::CaCerts,
    /// The fleet's join token (never logged, never passed to steps).
    pub join_token: String,
    /// Worker name. A live session of it held by this instance (same workspace, same
    /// host) is superseded; one held by another instance refuses this worker
    /// ([`WorkerError::NameHeld`]) unless `replace`.
    pub name: String,
    /// The namespace it belongs to (default `default`): it claims only that namespace's
    /// jobs and takes its pools and configs.
    pub namespace: String,
    /// Host name reported to the server.
    pub host: String,
    /// Local profile (`None` = default).
    pub profile: Option<String>,
    /// Queues to claim from (default `["default"]`).
    pub queues: Vec<String>,
    /// Tags this worker carries.
    pub tags: Vec<String>,
    /// Steps run at once at most (default: the number of CPUs).
    pub concurrency: u32,
    /// Directory for attempt directories (`attempts/`) and pgid records (`.rota/`).
    pub workspace: PathBuf,
    /// How long a warm shutdown lets running steps finish before stopping them.
    pub drain_timeout: Duration,
    /// Time between TERM and KILL when a step's process group is stopped.
    pub kill_grace: Duration,
    /// Log chunks are shipped at least this often.
    pub log_flush: Duration,
    /// Long-poll time of a claim.
    pub claim_wait: Duration,
    /// Overrides the server's heartbeat interval.
    pub heartbeat_interval: Option<Duration>,
    /// Overrides the server's lease TTL (for self-fencing).
    pub lease_ttl: Option<Duration>,
    /// Autoscaling bounds (MIN, MAX); `None` = fixed `concurrency`.
    pub autoscale: Option<(u32, u32)>,
    /// Slots added per scale-up (default 2).
    pub scale_up_step: u32,
    /// Slots removed per scale-down (default 2).
    pub scale_down_step: u32,
    /// No step running for this long starts scaling down (default 10 s).
    pub idle_period: Duration,
    /// Least time between two concurrency changes (default 1 s).
    pub cooldown: Duration,
    /// Run at most this many steps, then exit to be replaced (recycling).
    pub max_jobs: Option<u64>,
    /// Exit to be replaced once the worker's own RSS passes this many bytes.
    pub max_memory: Option<u64>,
    /// The helper that spawns every step ([`crate::Spawner::start`], before the runtime).
    /// Required: a worker without one refuses to start.
    pub spawner: Option<crate::Spawner>,
    /// Take the name over from a live worker of another instance (`--replace`), on the
    /// first registration only: a later re-registration never replaces anyone.
    pub replace: bool,
    /// A supervisor starts this worker again when it exits to be replaced (a background
    /// worker): a declared pool's change that needs a restart drains and exits 75. A
    /// foreground worker keeps its value and logs that a restart is needed.
    pub supervised: bool,
    /// Run every step (and the configs' setup) as this user, group and supplementary
    /// groups (`--run-as`; the worker runs as root). The spawner must have been started
    /// with [`crate::RunAs::helper_env`].
    pub run_as: Option<crate::RunAs>,
}

impl WorkerConfig {
    /// A configuration with every default filled in: name and host = this machine's host
    /// name, queue `default`, one slot per CPU, 30 s drain, 5 s kill grace, 250 ms log
    /// flush, 25 s claim long-poll, heartbeat and lease from the server.
    pub fn new(
        server: impl Into<String>,
        join_token: impl Into<String>,
        workspace: impl Into<PathBuf>,
    ) -> Self {
        let host = host_name();
        Self {
            server: server.into(),
            ca: rota_client::CaCerts::default(),
            join_token: join_token.into(),
            name: host.clone(),
            namespace: rota_domain::namespace::default_owned(),
            host,
            profile: None,
            queues: vec!["default".to_string()],
            tags: Vec::new(),
            concurrency: default_concurrency(),
            workspace: workspace.into(),
            drain_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            log_flush: Duration::from_millis(250),
            claim_wait: Duration::from_secs(25),
            heartbeat_interval: None,
            lease_ttl: None,
            autoscale: None,
            scale_up_step: 2,
            scale_down_step: 2,
            idle_period: Duration::from_secs(10),
            cooldown: Duration::from_secs(1),
            max_jobs: None,
            max_memory: None,
            supervised: false,
            spawner: None,
            replace: false,
            run_as: None,
        }
    }

    /// (MIN, MAX) concurrency: the autoscale bounds, or the fixed concurrency twice.
    pub fn concurrency_bounds(&self) -> (u32, u32) {
        self.autoscale.unwrap_or((self.concurrency, self.concurrency))
    }

    /// Refuses configurations that cannot work.
    pub(crate) fn validate(&self) -> Result<(), WorkerError> {
        let bad = |m: &str| Err(WorkerError::InvalidConfig(m.to_string()));
        if self.server.trim().is_empty() {
            return bad("server: no server address given");
        }
        if self.join_token.trim().is_empty() {
            return bad("join token: empty (set ROTA_JOIN_TOKEN or --join-token)");
        }
        if self.name.trim().is_empty() {
            return bad("name: must not be empty");
        }
        if self.name.starts_with('@') {
            return bad("name: must not start with '@' (it marks a namespace in workspace paths)");
        }
        if let Err(e) = rota_domain::namespace::check("namespace", &self.namespace) {
            return Err(WorkerError::InvalidConfig(e.to_string()));
        }
        if self.queues.is_empty() || self.queues.iter().any(|q| q.trim().is_empty()) {
            return bad("queues: at least one non-empty queue is needed");
        }
        if self.concurrency == 0 {
            return bad("concurrency: must be at least 1");
        }
        if let Some((min, max)) = self.autoscale
            && (min == 0 || min > max)
        {
            return bad("autoscale: MIN must be at least 1 and at most MAX");
        }
        if self.scale_up_step == 0 || self.scale_down_step == 0 {
            return bad("scale steps: must be at least 1");
        }
        if self.max_jobs == Some(0) {
            return bad("max jobs: must be at least 1");
        }
        if self.workspace.as_os_str().is_empty() {
            return bad("workspace: no directory given");
        }
        if let Some(run_as) = &self.run_as
            && let Err(why) = run_as.check_reach(&self.workspace)
        {
            return Err(WorkerError::InvalidConfig(why));
        }
        if self.spawner.is_none() {
            return bad("spawner: none given (start one with Spawner::start before the runtime)");
        }
        if self.log_flush.is_zero() {
            return bad("log flush interval: must be more than 0");
        }
        if self.heartbeat_interval.is_some_and(|d| d.is_zero()) || self.lease_ttl.is_some_and(|d| d.is_zero())
        {
            return bad("heartbeat interval and lease TTL must be more than 0");
        }
        Ok(())
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("join_token", &"<redacted>")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("profile", &self.profile)
            .field("queues", &self.queues)
            .field("tags", &self.tags)
            .field("concurrency", &self.concurrency)
            .field("workspace", &self.workspace)
            .field("drain_timeout", &self.drain_timeout)
            .field("kill_grace", &self.kill_grace)
            .field("log_flush", &self.log_flush)
            .field("claim_wait", &self.claim_wait)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("lease_ttl", &self.lease_ttl)
            .field("autoscale", &self.autoscale)
            .field("max_jobs", &self.max_jobs)
            .field("max_memory", &self.max_memory)
            .field("spawner", &self.spawner)
            .field("replace", &self.replace)
            .finish()
    }
}

/// This machine's host name (`uname` node name, else `/proc/sys/kernel/hostname`, else
/// `localhost`).
pub fn host_name() -> String {
    let uts = rustix::system::uname();
    let node = uts.nodename().to_string_lossy().trim().to_string();
    if !node.is_empty() {
        return node;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn default_concurrency() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_and_the_token_is_not_printed() {
        let c = WorkerConfig::new("zeus:7777", "s3cret-join", "/tmp/ws");
        assert!(!c.name.is_empty());
        assert_eq!(c.name, c.host);
        assert_eq!(c.queues, ["default"]);
        assert!(c.concurrency >= 1);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        // Everything but the spawner, which only a binary can start (before its runtime).
        assert!(matches!(c.validate(), Err(WorkerError::InvalidConfig(m)) if m.starts_with("spawner")));
        assert!(!format!("{c:?}").contains("s3cret-join"));
    }

    #[test]
    fn unusable_configurations_are_refused() {
        let base = WorkerConfig::new("zeus:7777", "t", "/tmp/ws");
        let cases: [fn(&mut WorkerConfig); 5] = [
            |c| c.concurrency = 0,
            |c| c.queues.clear(),
            |c| c.join_token.clear(),
            |c| c.name = " ".into(),
            |c| c.lease_ttl = Some(Duration::ZERO),
        ];
        for change in cases {
            let mut c = base.clone();
            change(&mut c);
            assert!(matches!(c.validate(), Err(WorkerError::InvalidConfig(_))));
        }
    }
}
