//! A background instance's saved settings (`<key>.json`): a worker's [`WorkerSettings`]
//! or the server's [`ServerSettings`], plus where it runs (log, pid file, control port,
//! env file, command) and how it is supervised. `start` resolves and writes it
//! (atomically); `restart`, `stop`, `heal` and the supervisor read it; the command line
//! is derived from it ([`Saved::invocation`]), never parsed back into it. Files of an
//! older format are upgraded when read (`upgrade.rs`).

use crate::error::{Error, Result};
use crate::files::{self, Loaded};
use crate::paths::{DEFAULT_PROFILE, Dirs, Instance, InstancePaths};
use rota_domain::settings::{ServerSettings, WorkerSettings};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The settings file format this binary writes. Version 1 (before one settings type) is
/// read and upgraded.
pub const SETTINGS_VERSION: u64 = 2;

/// The control port's default: loopback, any free port.
pub const DEFAULT_BIND: &str = "127.0.0.1:0";

/// How the supervisor restarts a crashed worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Supervision {
    /// First restart delay; doubles per consecutive unstable exit, capped at 60 s.
    pub restart_delay_ms: u64,
    /// Unstable exits within the window that mark the worker failed.
    pub max_restarts: u32,
    /// The window unstable exits are counted in.
    pub restart_window_ms: u64,
    /// Runs shorter than this are unstable.
    pub min_uptime_ms: u64,
}

impl Default for Supervision {
    fn default() -> Self {
        Self { restart_delay_ms: 1000, max_restarts: 5, restart_window_ms: 600_000, min_uptime_ms: 10_000 }
    }
}

/// Test-only switches, passed to the worker as hidden flags by a binary built with the
/// `test-hooks` feature (one without it has no such flags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestHooks {
    /// The worker exits abruptly while this file exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_file: Option<PathBuf>,
    /// The control port never answers shutdown requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hang_control: bool,
}

impl TestHooks {
    fn is_empty(&self) -> bool {
        self.crash_file.is_none() && !self.hang_control
    }
}

/// The saved settings of one background worker or of the background server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    /// File format version ([`SETTINGS_VERSION`]).
    pub version: u64,
    /// The instance's key (its file names).
    pub key: String,
    /// `multi` node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A worker's settings; `server` is always resolved (the control plane it joins).
    /// Empty (and left out) for the server.
    #[serde(default, skip_serializing_if = "is_default")]
    pub worker: WorkerSettings,
    /// The background server's settings (`None` for a worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_settings: Option<ServerSettings>,
    /// The control port's address (loopback).
    pub bind: String,
    /// Where the supervisor and the worker log.
    pub log_path: PathBuf,
    /// The supervisor's pid file.
    pub pidfile: PathBuf,
    /// The join token file written by `start` when a token was given (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token_file: Option<PathBuf>,
    /// KEY=VALUE file exported to the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
    /// The CA certificates the worker and the supervisor's link trust besides the system
    /// roots (`--ca-cert`; given to the worker as `ROTA_CA_CERT`). Kept here, not in the
    /// worker's settings: a host's file, never laid over by a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The command the worker runs (`multi --command`); `None` = `rota worker run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Restart policy.
    pub supervision: Supervision,
    /// Test-only switches.
    #[serde(default, skip_serializing_if = "TestHooks::is_empty")]
    pub test_hooks: TestHooks,
}

/// What a command line gives `start`; unset = keep the saved value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Worker settings laid over the saved ones.
    pub worker: WorkerSettings,
    /// Server settings laid over the saved ones (background server only).
    pub server_settings: ServerSettings,
    /// A join token to save in the instance's token file.
    pub join_token: Option<String>,
    /// `--bind`.
    pub bind: Option<String>,
    /// `--log-path` / `--logfile`.
    pub log_path: Option<PathBuf>,
    /// `--pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `--env-file`.
    pub env_file: Option<PathBuf>,
    /// `--ca-cert` / `ROTA_CA_CERT`.
    pub ca_cert: Option<PathBuf>,
    /// `--command`.
    pub command: Option<Vec<String>>,
    /// `--restart-delay`.
    pub restart_delay: Option<Duration>,
    /// `--max-restarts`.
    pub max_restarts: Option<u32>,
    /// `--restart-window`.
    pub restart_window: Option<Duration>,
    /// `--min-uptime`.
    pub min_uptime: Option<Duration>,
    /// `--test-crash-file`.
    pub test_crash_file: Option<PathBuf>,
    /// `--test-hang-control`.
    pub test_hang_control: bool,
}

fn is_default(w: &WorkerSettings) -> bool {
    *w == WorkerSettings::default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Saved {
    /// Defaults for an instance that was never started; `server` is the control plane a
    /// worker joins (for the server, its own URL).
    pub fn fresh(paths: &InstancePaths, server: String) -> Self {
        let (profile, node) = match &paths.instance {
            Instance::Profile(p) if p == DEFAULT_PROFILE => (None, None),
            Instance::Profile(p) => (Some(p.clone()), None),
            Instance::Node(n) => (None, Some(n.clone())),
            Instance::Server => (None, None),
        };
        let is_server = matches!(paths.instance, Instance::Server);
        Self {
            version: SETTINGS_VERSION,
            key: paths.key.clone(),
            node,
            worker: WorkerSettings {
                server: (!is_server).then_some(server),
                profile,
                ..WorkerSettings::default()
            },
            server_settings: is_server.then(ServerSettings::default),
            bind: DEFAULT_BIND.into(),
            log_path: paths.default_log.clone(),
            pidfile: paths.default_pidfile.clone(),
            join_token_file: None,
            env_file: None,
            ca_cert: None,
            command: None,
            supervision: Supervision::default(),
            test_hooks: TestHooks::default(),
        }
    }

    /// True for the background server (not a worker).
    pub fn is_server(&self) -> bool {
        self.server_settings.is_some()
    }

    /// `server` or `worker`, for messages.
    pub fn what(&self) -> &'static str {
        if self.is_server() { "server" } else { "worker" }
    }

    /// The control plane this instance serves or joins: a worker's `--server` (one URL or
    /// several joined by commas), or the background server's own URL.
    pub fn url(&self) -> String {
        match &self.server_settings {
            Some(s) => {
                let scheme = if s.tls() { "https" } else { "http" };
                match s.listen_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => {
                        format!(
                            "{scheme}://{}",
                            s.listen.as_deref().unwrap_or(ServerSettings::DEFAULT_LISTEN)
                        )
                    }
                }
            }
            None => self.worker.server.clone().unwrap_or_default(),
        }
    }

    /// Applies command-line settings (paths made absolute against `cwd`). The join token
    /// itself is not kept here; `join_token_file` is set by the caller that writes it.
    pub fn apply(&mut self, o: &Overrides, cwd: &Path) -> Result<()> {
        let abs = |p: &PathBuf| if p.is_absolute() { p.clone() } else { cwd.join(p) };
        let mut worker = o.worker.clone();
        worker.absolutize(cwd);
        self.worker.overlay(&worker);
        self.worker.check().map_err(Error::usage)?;
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
        if let Some(p) = &o.ca_cert {
            self.ca_cert = Some(abs(p));
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
        if let Some(server) = &mut self.server_settings {
            server.overlay(&o.server_settings);
            server.check().map_err(Error::usage)?;
        }
        Ok(())
    }

    /// The drain timeout the worker uses.
    pub fn drain_timeout(&self) -> Duration {
        self.worker.drain_timeout()
    }

    /// The worker's (or server's) command line: program, arguments, and the environment
    /// it needs (besides the supervisor's own: readiness, control secret). `exe` is this
    /// binary.
    pub fn invocation(&self, exe: &Path) -> Invocation {
        if let Some(server) = &self.server_settings {
            return Invocation { program: exe.to_path_buf(), args: server.serve_args(), env: Vec::new() };
        }
        let url = self.url();
        let mut env = vec![("ROTA_SERVER".to_string(), url)];
        if let Some(ca) = &self.ca_cert {
            env.push(("ROTA_CA_CERT".into(), ca.display().to_string()));
        }
        let mut worker = self.worker.clone();
        if let Some(node) = &self.node {
            env.push(("ROTA_WORKER_NODE".into(), node.clone()));
            env.push(("ROTA_WORKER_PIDFILE".into(), self.pidfile.display().to_string()));
            env.push(("ROTA_WORKER_LOGFILE".into(), self.log_path.display().to_string()));
            // A node's own command may not take `--queue`: its queues go in the environment.
            if !worker.queues.is_empty() {
                env.push(("ROTA_WORKER_QUEUES".into(), worker.queues.join(",")));
            }
            worker.queues.clear();
        }
        if let Some(command) = self.command.as_ref().filter(|c| !c.is_empty()) {
            return Invocation { program: PathBuf::from(&command[0]), args: command[1..].to_vec(), env };
        }
        #[allow(unused_mut)]
        let mut args = worker.run_args();
        // Saved only by a binary built with the feature `test-hooks`; one without it has
        // no such flags (and must not name them: CI greps release binaries for them).
        #[cfg(feature = "test-hooks")]
        {
            if let Some(f) = &self.test_hooks.crash_file {
                args.extend(["--test-crash-file".to_string(), f.display().to_string()]);
            }
            if self.test_hooks.hang_control {
                args.push("--test-hang-control".into());
            }
        }
        Invocation { program: exe.to_path_buf(), args, env }
    }

    /// The exact foreground command that reproduces this instance, for error messages
    /// (the token is referenced by its file, never printed).
    pub fn foreground_command(&self) -> String {
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

/// Parses a settings file of this or an older format: the settings, and whether they were
/// upgraded (the caller that may write rewrites the file in this format).
pub fn parse(bytes: &[u8]) -> std::result::Result<(Saved, bool), String> {
    let (version, value) = files::versioned_value(bytes)?;
    match version {
        SETTINGS_VERSION => {
            serde_json::from_value(value).map(|s| (s, false)).map_err(|e| format!("unexpected content ({e})"))
        }
        1 => crate::upgrade::from_v1(value).map(|s| (s, true)),
        v => Err(format!("unknown version {v} (this rota understands {SETTINGS_VERSION} and 1)")),
    }
}

/// Loads the saved settings of `paths`, upgrading a file of an older format in place
/// (atomically); a corrupt or unknown file is quarantined and reported in `notes`.
pub fn load(paths: &InstancePaths, notes: &mut Vec<String>) -> Result<Option<Saved>> {
    let loaded = files::load_with(&paths.meta, parse)
        .map_err(|e| Error::io(format!("cannot read {}", paths.meta.display()), e))?;
    match loaded {
        Loaded::Found((mut saved, mut upgraded)) => {
            let plain =
                saved.server_settings.as_mut().is_some_and(ServerSettings::keep_plain_http_on_upgrade);
            if plain {
                upgraded = true;
                notes.push(format!(
                    "the saved background server listens on {} over plain HTTP: this release needs \
                     --insecure-http for that, so it is now saved with it (tokens cross the network in \
                     clear text; restart it with --tls-cert FILE --tls-key FILE to serve HTTPS)",
                    saved.server_settings.as_ref().and_then(|s| s.listen.clone()).unwrap_or_default()
                ));
            }
            if upgraded {
                files::write_json(&paths.meta, &saved, 0o600).map_err(|e| {
                    Error::io(format!("cannot write the upgraded settings {}", paths.meta.display()), e)
                })?;
                notes.push(format!(
                    "upgraded the saved settings {} to this release's format (version {SETTINGS_VERSION})",
                    paths.meta.display()
                ));
            }
            Ok(Some(saved))
        }
        Loaded::Missing => Ok(None),
        Loaded::Quarantined { to, why } => {
            notes.push(format!(
                "the saved settings {} could not be trusted ({why}); moved to {} and not used",
                paths.meta.display(),
                to.display()
            ));
            Ok(None)
        }
    }
}

/// Every instance with saved settings in `dirs`, read-only (an old format is upgraded in
/// memory, not rewritten): (its files, its settings or why they cannot be trusted),
/// ordered by key.
pub fn all_saved(dirs: &Dirs) -> std::io::Result<Vec<(InstancePaths, std::result::Result<Saved, String>)>> {
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
        match files::peek_with(&paths.meta, parse) {
            Ok(Some((mut m, _))) => {
                if let Some(s) = m.server_settings.as_mut() {
                    s.keep_plain_http_on_upgrade();
                }
                out.push((paths, Ok(m)))
            }
            Ok(None) => {}
            Err(e) => out.push((paths, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(out)
}

/// How to run a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
}

/// `127.0.0.1:0`, `[::1]:7000`, `localhost:7000`, `:7000` or a bare loopback IP (port
/// 0). The control port is loopback only.
pub fn parse_bind(s: &str) -> Result<SocketAddr> {
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
        Some(a) => Err(Error::usage(format!(
            "--bind {a}: the control port must be a loopback address (it can stop the worker)"
        ))),
        None => Err(Error::usage(format!("--bind '{s}': expected IP:PORT, e.g. 127.0.0.1:0"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paths(inst: Instance) -> InstancePaths {
        Dirs { state: "/s".into(), run: "/r".into() }.instance(&inst)
    }

    #[test]
    fn overrides_replace_only_what_was_given() {
        let p = paths(Instance::profile(Some("ci")).unwrap());
        let mut m = Saved::fresh(&p, "http://127.0.0.1:7777".into());
        assert_eq!(m.log_path, PathBuf::from("/s/profile-ci.log"));
        assert_eq!(m.pidfile, PathBuf::from("/r/profile-ci.pid"));
        let o = Overrides {
            worker: WorkerSettings {
                queues: vec!["a".into(), "b".into()],
                drain_timeout: Some(Duration::from_secs(5)),
                workspace: Some("ws".into()),
                ..WorkerSettings::default()
            },
            log_path: Some("rel.log".into()),
            ..Overrides::default()
        };
        m.apply(&o, Path::new("/cwd")).unwrap();
        assert_eq!(m.log_path, PathBuf::from("/cwd/rel.log"));
        assert_eq!(m.worker.workspace, Some(PathBuf::from("/cwd/ws")));
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
                "5s",
                "--workspace",
                "/cwd/ws"
            ]
        );
        assert_eq!(
            m.foreground_command(),
            "rota --server http://127.0.0.1:7777 worker run --profile ci --queue a --queue b --drain-timeout 5s \
             --workspace /cwd/ws"
        );
        let bad = Overrides {
            worker: WorkerSettings { concurrency: Some(0), ..WorkerSettings::default() },
            ..Overrides::default()
        };
        assert!(m.apply(&bad, Path::new("/")).unwrap_err().is_usage());
    }

    #[test]
    fn nodes_get_their_exports_and_custom_commands() {
        let p = paths(Instance::node("alpha").unwrap());
        let mut m = Saved::fresh(&p, "http://h:1".into());
        m.worker.queues = vec!["q1".into(), "q2".into()];
        let inv = m.invocation(Path::new("/bin/rota"));
        assert!(!inv.args.contains(&"--queue".to_string()), "a node's queues go in its environment");
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
        let m = Saved::fresh(&p, "http://a:7777,http://b:7777".into());
        let saved = serde_json::to_vec(&m).unwrap();
        let (read, upgraded) = parse(&saved).unwrap();
        assert_eq!((read.clone(), upgraded), (m, false));
        let inv = read.invocation(Path::new("/bin/rota"));
        assert_eq!(inv.args[..2], ["--server", "http://a:7777,http://b:7777"]);
        assert!(inv.env.contains(&("ROTA_SERVER".into(), "http://a:7777,http://b:7777".into())));
    }

    #[test]
    fn the_server_saves_its_settings_and_runs_from_them() {
        let p = paths(Instance::Server);
        let mut m = Saved::fresh(&p, String::new());
        assert!(m.is_server());
        let o = Overrides {
            server_settings: ServerSettings {
                listen: Some("127.0.0.1:0".into()),
                retention: Some(Duration::from_secs(3600)),
                ..ServerSettings::default()
            },
            ..Overrides::default()
        };
        m.apply(&o, Path::new("/")).unwrap();
        assert_eq!(m.url(), "http://127.0.0.1:0");
        assert_eq!(
            m.invocation(Path::new("/bin/rota")).args,
            ["server", "--listen", "127.0.0.1:0", "--retention", "1h"]
        );
        let late = Overrides {
            server_settings: ServerSettings {
                lease_ttl: Some(Duration::from_secs(1)),
                ..ServerSettings::default()
            },
            ..Overrides::default()
        };
        assert!(m.apply(&late, Path::new("/")).unwrap_err().is_usage());
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
