//! A background worker's saved settings (`<key>.json`): the flags given to `start` (or
//! `multi start`), resolved once and persisted so `restart`, `stop` and `heal` need none
//! repeated. Only `start` writes it (atomically); heal never does. It also turns the
//! settings into the worker's command line, for the supervisor and for error messages.

use super::files::FILE_VERSION;
use super::paths::{DEFAULT_PROFILE, Instance, InstancePaths};
use crate::failure::usage;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The control port's default: loopback, any free port.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:0";

/// How the supervisor restarts a crashed worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Supervision {
    /// First restart delay; doubles per consecutive unstable exit, capped at 60 s.
    pub(crate) restart_delay_ms: u64,
    /// Unstable exits within the window that mark the worker failed.
    pub(crate) max_restarts: u32,
    /// The window unstable exits are counted in.
    pub(crate) restart_window_ms: u64,
    /// Runs shorter than this are unstable.
    pub(crate) min_uptime_ms: u64,
}

impl Default for Supervision {
    fn default() -> Self {
        Self { restart_delay_ms: 1000, max_restarts: 5, restart_window_ms: 600_000, min_uptime_ms: 10_000 }
    }
}

/// Test-only switches, passed to the worker as hidden flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TestHooks {
    /// The worker exits abruptly while this file exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) crash_file: Option<PathBuf>,
    /// The control port never answers shutdown requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) hang_control: bool,
}

impl TestHooks {
    fn is_empty(&self) -> bool {
        self.crash_file.is_none() && !self.hang_control
    }
}

/// The saved settings of one background worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    /// File format version.
    pub(crate) version: u64,
    /// The worker's key.
    pub(crate) key: String,
    /// Base URL of the server, or of several servers of one control plane joined by commas
    /// (`http://a:7777,http://b:7777`, as `config::server_url` writes it): passed as is in
    /// `--server` and `ROTA_SERVER`, which split it again. Files written before several
    /// servers existed hold one URL, the same form.
    pub(crate) server: String,
    /// `--name` (else the host name, `profile@host`, or the node name).
    pub(crate) name: Option<String>,
    /// Profile (`None` = default).
    pub(crate) profile: Option<String>,
    /// `multi` node name.
    pub(crate) node: Option<String>,
    /// Queues (empty = the worker's default).
    pub(crate) queues: Vec<String>,
    /// Tags.
    pub(crate) tags: Vec<String>,
    /// `--concurrency`.
    pub(crate) concurrency: Option<u32>,
    /// `--drain-timeout`.
    pub(crate) drain_timeout_ms: Option<u64>,
    /// `--workspace`.
    pub(crate) workspace: Option<PathBuf>,
    /// The control port's address (loopback).
    pub(crate) bind: String,
    /// Where the supervisor and the worker log.
    pub(crate) log_path: PathBuf,
    /// The supervisor's pid file.
    pub(crate) pidfile: PathBuf,
    /// The join token file written by `start` when a token was given (0600).
    pub(crate) join_token_file: Option<PathBuf>,
    /// KEY=VALUE file exported to the worker.
    pub(crate) env_file: Option<PathBuf>,
    /// The command the worker runs (`multi --command`); `None` = `rota worker run`.
    pub(crate) command: Option<Vec<String>>,
    /// Autoscaling and recycling flags (`--autoscale`, `--max-jobs`, ...), as given.
    #[serde(default, skip_serializing_if = "Scaling::is_empty")]
    pub(crate) scaling: Scaling,
    /// Restart policy.
    pub(crate) supervision: Supervision,
    /// Test-only switches.
    #[serde(default, skip_serializing_if = "TestHooks::is_empty")]
    pub(crate) test_hooks: TestHooks,
    /// For the background server: its `rota server` flags (`listen` → `127.0.0.1:0`; a
    /// flag without a value is `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server_flags: Option<std::collections::BTreeMap<String, String>>,
}

/// Settings given on a command line; `None`/empty = keep the saved value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub(crate) server: Option<String>,
    pub(crate) join_token: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) queues: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) drain_timeout: Option<Duration>,
    pub(crate) workspace: Option<PathBuf>,
    pub(crate) bind: Option<String>,
    pub(crate) log_path: Option<PathBuf>,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) env_file: Option<PathBuf>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) restart_delay: Option<Duration>,
    pub(crate) max_restarts: Option<u32>,
    pub(crate) restart_window: Option<Duration>,
    pub(crate) min_uptime: Option<Duration>,
    pub(crate) test_crash_file: Option<PathBuf>,
    pub(crate) test_hang_control: bool,
    /// `rota server` flags (background server only); each replaces its saved value.
    pub(crate) server_flags: std::collections::BTreeMap<String, String>,
    pub(crate) scaling: Scaling,
}

/// Autoscaling and recycling settings saved with the worker (flag values as given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Scaling {
    pub(crate) autoscale: Option<(u32, u32)>,
    pub(crate) scale_up_step: Option<u32>,
    pub(crate) scale_down_step: Option<u32>,
    pub(crate) idle_period_ms: Option<u64>,
    pub(crate) cooldown_ms: Option<u64>,
    pub(crate) max_jobs: Option<u64>,
    pub(crate) max_memory: Option<u64>,
}

impl Scaling {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Keeps what was saved, replaced field by field by what was given now.
    fn merge(&mut self, o: &Scaling) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(autoscale, scale_up_step, scale_down_step, idle_period_ms, cooldown_ms, max_jobs, max_memory);
    }

    fn flags(&self, flag: &mut impl FnMut(&str, String)) {
        if let Some((a, b)) = self.autoscale {
            flag("autoscale", format!("{a},{b}"));
        }
        if let Some(n) = self.scale_up_step {
            flag("scale-up-step", n.to_string());
        }
        if let Some(n) = self.scale_down_step {
            flag("scale-down-step", n.to_string());
        }
        if let Some(ms) = self.idle_period_ms {
            flag("idle-period", format!("{ms}ms"));
        }
        if let Some(ms) = self.cooldown_ms {
            flag("cooldown", format!("{ms}ms"));
        }
        if let Some(n) = self.max_jobs {
            flag("max-jobs", n.to_string());
        }
        if let Some(n) = self.max_memory {
            flag("max-memory", n.to_string());
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Meta {
    /// Defaults for a worker that was never started: `server` is the resolved base URL.
    pub(crate) fn fresh(paths: &InstancePaths, server: String) -> Self {
        let (profile, node) = match &paths.instance {
            Instance::Profile(p) if p == DEFAULT_PROFILE => (None, None),
            Instance::Profile(p) => (Some(p.clone()), None),
            Instance::Node(n) => (None, Some(n.clone())),
            Instance::Server => (None, None),
        };
        Self {
            version: FILE_VERSION,
            key: paths.key.clone(),
            server,
            name: None,
            profile,
            node,
            queues: Vec::new(),
            tags: Vec::new(),
            concurrency: None,
            drain_timeout_ms: None,
            workspace: None,
            bind: DEFAULT_BIND.into(),
            log_path: paths.default_log.clone(),
            pidfile: paths.default_pidfile.clone(),
            join_token_file: None,
            env_file: None,
            command: None,
            scaling: Scaling::default(),
            supervision: Supervision::default(),
            test_hooks: TestHooks::default(),
            server_flags: matches!(paths.instance, Instance::Server).then(Default::default),
        }
    }

    /// True for the background server (not a worker).
    pub(crate) fn is_server(&self) -> bool {
        self.server_flags.is_some()
    }

    /// Applies command-line settings (paths made absolute against `cwd`). The join token
    /// itself is not kept here; `join_token_file` is set by the caller that writes it.
    pub(crate) fn apply(&mut self, o: &Overrides, cwd: &Path) -> Result<()> {
        let abs = |p: &PathBuf| if p.is_absolute() { p.clone() } else { cwd.join(p) };
        if let Some(s) = &o.server {
            self.server = s.clone();
        }
        if let Some(n) = &o.name {
            self.name = Some(n.clone());
        }
        if !o.queues.is_empty() {
            self.queues = o.queues.clone();
        }
        if !o.tags.is_empty() {
            self.tags = o.tags.clone();
        }
        if let Some(c) = o.concurrency {
            self.concurrency = Some(c);
        }
        if let Some(d) = o.drain_timeout {
            self.drain_timeout_ms = Some(millis(d));
        }
        if let Some(w) = &o.workspace {
            self.workspace = Some(abs(w));
        }
        if let Some(b) = &o.bind {
            parse_bind(b)?;
            self.bind = b.clone();
        }
        if let Some(p) = &o.log_path {
            self.log_path = abs(p);
        }
        if let Some(p) = &o.pidfile {
            self.pidfile = abs(p);
        }
        if let Some(p) = &o.env_file {
            self.env_file = Some(abs(p));
        }
        if let Some(c) = &o.command {
            self.command = Some(c.clone());
        }
        let s = &mut self.supervision;
        if let Some(d) = o.restart_delay {
            s.restart_delay_ms = millis(d).max(1);
        }
        if let Some(n) = o.max_restarts {
            s.max_restarts = n;
        }
        if let Some(d) = o.restart_window {
            s.restart_window_ms = millis(d).max(1);
        }
        if let Some(d) = o.min_uptime {
            s.min_uptime_ms = millis(d);
        }
        if let Some(f) = &o.test_crash_file {
            self.test_hooks.crash_file = Some(abs(f));
        }
        if o.test_hang_control {
            self.test_hooks.hang_control = true;
        }
        if o.scaling.autoscale.is_some() {
            // --autoscale replaces a saved fixed --concurrency, and the reverse.
            self.concurrency = None;
        } else if o.concurrency.is_some() {
            self.scaling.autoscale = None;
        }
        self.scaling.merge(&o.scaling);
        if let Some(flags) = &mut self.server_flags {
            flags.extend(o.server_flags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }

    /// The drain timeout the worker uses (its own default: 30 s).
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms.unwrap_or(30_000))
    }

    /// The worker's command line: program, arguments, and the environment it needs
    /// (besides the supervisor's own: readiness, control secret). `exe` is this binary.
    pub(crate) fn invocation(&self, exe: &Path) -> Invocation {
        let mut env = vec![("ROTA_SERVER".to_string(), self.server.clone())];
        if let Some(node) = &self.node {
            env.push(("ROTA_WORKER_NODE".into(), node.clone()));
            env.push(("ROTA_WORKER_PIDFILE".into(), self.pidfile.display().to_string()));
            env.push(("ROTA_WORKER_LOGFILE".into(), self.log_path.display().to_string()));
            if !self.queues.is_empty() {
                env.push(("ROTA_WORKER_QUEUES".into(), self.queues.join(",")));
            }
        }
        if let Some(flags) = &self.server_flags {
            let mut args = vec!["server".to_string()];
            for (k, v) in flags {
                args.push(format!("--{}", k.replace('_', "-")));
                if v != "true" {
                    args.push(v.clone());
                }
            }
            return Invocation { program: exe.to_path_buf(), args, env: Vec::new() };
        }
        if let Some(command) = self.command.as_ref().filter(|c| !c.is_empty()) {
            return Invocation { program: PathBuf::from(&command[0]), args: command[1..].to_vec(), env };
        }
        let mut args: Vec<String> =
            vec!["--server".into(), self.server.clone(), "worker".into(), "run".into()];
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        if let Some(p) = &self.profile {
            flag("profile", p.clone());
        }
        if let Some(n) = &self.name {
            flag("name", n.clone());
        }
        if self.node.is_none() {
            for q in &self.queues {
                flag("queue", q.clone());
            }
        }
        for t in &self.tags {
            flag("tag", t.clone());
        }
        if let Some(c) = self.concurrency {
            flag("concurrency", c.to_string());
        }
        if let Some(ms) = self.drain_timeout_ms {
            flag("drain-timeout", format!("{ms}ms"));
        }
        if let Some(w) = &self.workspace {
            flag("workspace", w.display().to_string());
        }
        self.scaling.flags(&mut flag);
        // Saved only by a binary built with the feature `test-hooks`; one without it has
        // no such flags (and must not name them: CI greps release binaries for them).
        #[cfg(feature = "test-hooks")]
        {
            if let Some(f) = &self.test_hooks.crash_file {
                flag("test-crash-file", f.display().to_string());
            }
            if self.test_hooks.hang_control {
                args.push("--test-hang-control".into());
            }
        }
        Invocation { program: exe.to_path_buf(), args, env }
    }

    /// The exact foreground command that reproduces this worker, for error messages
    /// (the token is referenced by its file, never printed).
    pub(crate) fn foreground_command(&self) -> String {
        let inv = self.invocation(Path::new("rota"));
        if self.is_server() {
            let mut argv = vec![inv.program.display().to_string()];
            argv.extend(inv.args);
            return crate::shell::join_quoted(&argv);
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(f) = &self.join_token_file {
            words.push(format!(
                "ROTA_JOIN_TOKEN=\"$(cat {})\"",
                crate::shell::join_quoted(&[f.display().to_string()])
            ));
        }
        for (k, v) in inv.env.iter().filter(|(k, _)| k != "ROTA_SERVER" || self.command.is_some()) {
            words.push(format!("{k}={}", crate::shell::join_quoted(&[v])));
        }
        let mut argv = vec![inv.program.display().to_string()];
        argv.extend(inv.args);
        words.push(crate::shell::join_quoted(&argv));
        words.join(" ")
    }
}

/// Every worker with saved settings in `dirs`, read-only: (its files, its settings or
/// why they cannot be trusted), ordered by key.
pub(crate) fn all_saved(
    dirs: &super::paths::Dirs,
) -> std::io::Result<Vec<(InstancePaths, Result<Meta, String>)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dirs.state) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".json").filter(|k| !k.ends_with(".state")) else { continue };
        let Some(instance) = Instance::from_key(key) else { continue };
        let paths = dirs.instance(&instance);
        match super::files::peek_json::<Meta>(&paths.meta) {
            Ok(Some(m)) => out.push((paths, Ok(m))),
            Ok(None) => {}
            Err(e) => out.push((paths, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(out)
}

/// How to run a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// The program.
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Variables to set.
    pub(crate) env: Vec<(String, String)>,
}

/// `127.0.0.1:0`, `[::1]:7000`, `localhost:7000`, `:7000` or a bare loopback IP (port
/// 0). The control port is loopback only.
pub(crate) fn parse_bind(s: &str) -> Result<SocketAddr> {
    let t = s.trim();
    let addr = if let Ok(a) = t.parse::<SocketAddr>() {
        Some(a)
    } else if let Ok(ip) = t.parse::<IpAddr>() {
        Some(SocketAddr::new(ip, 0))
    } else {
        let port = t.strip_prefix("localhost:").or_else(|| t.strip_prefix(':'));
        port.and_then(|p| p.parse::<u16>().ok()).map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
    };
    match addr {
        Some(a) if a.ip().is_loopback() => Ok(a),
        Some(a) => Err(usage(format!(
            "--bind {a}: the control port must be a loopback address (it can stop the worker)"
        ))),
        None => Err(usage(format!("--bind '{s}': expected IP:PORT, e.g. 127.0.0.1:0"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::paths::Dirs;

    fn paths(inst: Instance) -> InstancePaths {
        Dirs { state: "/s".into(), run: "/r".into() }.instance(&inst)
    }

    #[test]
    fn overrides_replace_only_what_was_given() {
        let p = paths(Instance::profile(Some("ci")).unwrap());
        let mut m = Meta::fresh(&p, "http://127.0.0.1:7777".into());
        assert_eq!(m.log_path, PathBuf::from("/s/profile-ci.log"));
        assert_eq!(m.pidfile, PathBuf::from("/r/profile-ci.pid"));
        let o = Overrides {
            queues: vec!["a".into(), "b".into()],
            log_path: Some("rel.log".into()),
            drain_timeout: Some(Duration::from_secs(5)),
            ..Overrides::default()
        };
        m.apply(&o, Path::new("/cwd")).unwrap();
        assert_eq!(m.log_path, PathBuf::from("/cwd/rel.log"));
        let before = m.clone();
        m.apply(&Overrides::default(), Path::new("/cwd")).unwrap();
        assert_eq!(m, before, "no flags = nothing changes");
        let inv = m.invocation(Path::new("/bin/rota"));
        assert_eq!(
            inv.args,
            [
                "--server",
                "http://127.0.0.1:7777",
                "worker",
                "run",
                "--profile",
                "ci",
                "--queue",
                "a",
                "--queue",
                "b",
                "--drain-timeout",
                "5000ms"
            ]
        );
        assert_eq!(
            m.foreground_command(),
            "rota --server http://127.0.0.1:7777 worker run --profile ci --queue a --queue b --drain-timeout 5000ms"
        );
    }

    #[test]
    fn nodes_get_their_exports_and_custom_commands() {
        let p = paths(Instance::node("alpha").unwrap());
        let mut m = Meta::fresh(&p, "http://h:1".into());
        m.queues = vec!["q1".into(), "q2".into()];
        m.command = Some(vec!["/opt/w".into(), "--x".into()]);
        let inv = m.invocation(Path::new("/bin/rota"));
        assert_eq!(inv.program, PathBuf::from("/opt/w"));
        assert!(inv.env.contains(&("ROTA_WORKER_NODE".into(), "alpha".into())));
        assert!(inv.env.contains(&("ROTA_WORKER_QUEUES".into(), "q1,q2".into())));
        assert!(inv.env.contains(&("ROTA_WORKER_PIDFILE".into(), "/r/node-alpha.pid".into())));
        assert!(m.foreground_command().ends_with("/opt/w --x"), "{}", m.foreground_command());
    }

    #[test]
    fn a_server_list_is_saved_and_passed_whole() {
        let p = paths(Instance::profile(None).unwrap());
        let m = Meta::fresh(&p, "http://a:7777,http://b:7777".into());
        let saved = serde_json::to_string(&m).unwrap();
        let read: Meta = serde_json::from_str(&saved).unwrap();
        assert_eq!(read, m);
        let inv = read.invocation(Path::new("/bin/rota"));
        assert_eq!(inv.args[..2], ["--server", "http://a:7777,http://b:7777"]);
        assert!(inv.env.contains(&("ROTA_SERVER".into(), "http://a:7777,http://b:7777".into())));
        // The worker reads it back as the same two servers.
        let again = crate::config::server_url(&[inv.args[1].clone()]).unwrap();
        assert_eq!(again, "http://a:7777,http://b:7777");
        // A file of an older release (one server) still reads.
        let mut old: serde_json::Value = serde_json::from_str(&saved).unwrap();
        old["server"] = "http://127.0.0.1:7777".into();
        let read: Meta = serde_json::from_value(old).unwrap();
        assert_eq!(read.server, "http://127.0.0.1:7777");
    }

    #[test]
    fn binds_are_loopback_only() {
        assert_eq!(parse_bind("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(parse_bind(":7001").unwrap().port(), 7001);
        assert_eq!(parse_bind("127.0.0.1").unwrap().port(), 0);
        assert!(parse_bind("0.0.0.0:7001").is_err());
        assert!(parse_bind("nonsense").is_err());
    }
}
