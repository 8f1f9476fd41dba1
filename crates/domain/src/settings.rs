//! The settings of a worker and of a server, as one serde type each: what their flags
//! parse into, what a background instance saves, and what a declared worker pool will lay
//! over a worker's own. Command lines are derived from these (`run_args`, `serve_args`),
//! never the reverse. Pure data and rules: defaults, overlays, limits; no I/O.

use crate::units::{serde_duration, serde_size};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most steps a worker runs at once (`--concurrency`, `--autoscale`, scale steps).
pub const MAX_CONCURRENCY: u32 = 1024;

/// A setting that breaks a rule: which one and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingError {
    /// The setting, spelled as its flag (`--concurrency`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SettingError {
    SettingError { field, message: message.into() }
}

/// Autoscaling bounds: between `min` and `max` steps at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest slots.
    pub min: u32,
    /// Most slots.
    pub max: u32,
}

impl Autoscale {
    /// `MIN,MAX` with 1 <= MIN <= MAX <= [`MAX_CONCURRENCY`], as `--autoscale` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once(',').ok_or_else(|| format!("'{s}': expected MIN,MAX such as 2,8"))?;
        let min: u32 = a.trim().parse().map_err(|_| format!("'{a}' is not a number"))?;
        let max: u32 = b.trim().parse().map_err(|_| format!("'{b}' is not a number"))?;
        let bounds = Self { min, max };
        bounds.check().map_err(|e| format!("'{s}': {}", e.message))?;
        Ok(bounds)
    }

    fn check(&self) -> Result<(), SettingError> {
        if self.min == 0 || self.min > self.max || self.max > MAX_CONCURRENCY {
            return Err(bad("--autoscale", format!("need 1 <= MIN <= MAX <= {MAX_CONCURRENCY}")));
        }
        Ok(())
    }
}

impl std::fmt::Display for Autoscale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.min, self.max)
    }
}

/// How one worker runs. Every field is optional: unset means "the worker's default" in
/// flags, "keep what was saved" in an overlay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSettings {
    /// The control plane: one base URL, or several of one control plane joined by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The name it registers under (else the host name, `profile@host` or the node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The local profile (one background worker per host and profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Its namespace (else `default`): it claims only that namespace's jobs. Never laid
    /// over by a pool: pools act within a namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Queues it takes steps from (empty: `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Tags it carries, for jobs that ask for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Steps at once (else the number of CPUs); excludes `autoscale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Autoscaling bounds; excludes `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Slots added per autoscale step up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_step: Option<u32>,
    /// Slots removed per autoscale step down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_step: Option<u32>,
    /// Idle time before scaling down.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "10s"))]
    pub idle_period: Option<Duration>,
    /// Least time between two concurrency changes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1s"))]
    pub cooldown: Option<Duration>,
    /// Recycle after this many steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u64>,
    /// Recycle once the worker's own RSS passes this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_size")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub max_memory: Option<u64>,
    /// How long running steps may finish on a warm stop.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    pub drain_timeout: Option<Duration>,
    /// Where steps run (else a directory named for the worker in the data dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub workspace: Option<PathBuf>,
    /// Run every step as this user (`USER[:GROUP]`; the worker runs as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
}

impl WorkerSettings {
    /// The drain timeout a worker uses when none is set.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

    /// The drain timeout in force.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout.unwrap_or(Self::DEFAULT_DRAIN_TIMEOUT)
    }

    /// Lays `top` over these settings: every field `top` sets replaces this one's. A fixed
    /// `concurrency` and `autoscale` exclude each other, so setting one drops the other.
    pub fn overlay(&mut self, top: &WorkerSettings) {
        macro_rules! take {
            ($($f:ident),*) => { $( if top.$f.is_some() { self.$f = top.$f.clone(); } )* };
        }
        take!(
            server,
            name,
            profile,
            concurrency,
            autoscale,
            scale_up_step,
            scale_down_step,
            idle_period,
            cooldown,
            max_jobs,
            max_memory,
            drain_timeout,
            workspace,
            run_as
        );
        if !top.queues.is_empty() {
            self.queues = top.queues.clone();
        }
        if !top.tags.is_empty() {
            self.tags = top.tags.clone();
        }
        if top.autoscale.is_some() {
            self.concurrency = None;
        } else if top.concurrency.is_some() {
            self.autoscale = None;
        }
    }

    /// A relative workspace made absolute against `cwd` (a background worker does not run
    /// where its settings were given).
    pub fn absolutize(&mut self, cwd: &Path) {
        if let Some(w) = self.workspace.as_mut().filter(|w| w.is_relative()) {
            *w = cwd.join(&*w);
        }
    }

    /// The rules flags enforce, for settings that did not come from flags (a saved file,
    /// a pool). Names the first setting that breaks one.
    pub fn check(&self) -> Result<(), SettingError> {
        let slots = |field: &'static str, n: Option<u32>| match n {
            Some(n) if n == 0 || n > MAX_CONCURRENCY => {
                Err(bad(field, format!("{n} is outside 1..={MAX_CONCURRENCY}")))
            }
            _ => Ok(()),
        };
        slots("--concurrency", self.concurrency)?;
        slots("--scale-up-step", self.scale_up_step)?;
        slots("--scale-down-step", self.scale_down_step)?;
        if let Some(a) = &self.autoscale {
            a.check()?;
            if self.concurrency.is_some() {
                return Err(bad("--autoscale", "cannot be used with --concurrency"));
            }
        }
        if self.max_jobs == Some(0) {
            return Err(bad("--max-jobs", "must be at least 1"));
        }
        if let Some(ns) = &self.namespace {
            crate::namespace::check("--namespace", ns).map_err(|e| bad("--namespace", e.message))?;
        }
        if self.name.as_deref().is_some_and(|n| n.starts_with('@')) {
            return Err(bad("--name", "must not start with '@' (it marks a namespace in workspace paths)"));
        }
        if self.max_memory == Some(0) {
            return Err(bad("--max-memory", "must be greater than zero"));
        }
        for (field, list) in [("--queue", &self.queues), ("--tag", &self.tags)] {
            if list.iter().any(|v| v.trim().is_empty()) {
                return Err(bad(field, "empty"));
            }
        }
        Ok(())
    }

    /// The `rota` arguments that run a worker with these settings in the foreground:
    /// `[--server S] worker run --flag value ...`, in one fixed order.
    pub fn run_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(s) = &self.server {
            args.extend(["--server".to_string(), s.clone()]);
        }
        args.extend(["worker".to_string(), "run".to_string()]);
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
        if let Some(ns) = &self.namespace {
            flag("namespace", ns.clone());
        }
        for q in &self.queues {
            flag("queue", q.clone());
        }
        for t in &self.tags {
            flag("tag", t.clone());
        }
        if let Some(c) = self.concurrency {
            flag("concurrency", c.to_string());
        }
        if let Some(a) = self.autoscale {
            flag("autoscale", a.to_string());
        }
        if let Some(n) = self.scale_up_step {
            flag("scale-up-step", n.to_string());
        }
        if let Some(n) = self.scale_down_step {
            flag("scale-down-step", n.to_string());
        }
        if let Some(d) = self.idle_period {
            flag("idle-period", duration_arg(d));
        }
        if let Some(d) = self.cooldown {
            flag("cooldown", duration_arg(d));
        }
        if let Some(n) = self.max_jobs {
            flag("max-jobs", n.to_string());
        }
        if let Some(n) = self.max_memory {
            flag("max-memory", n.to_string());
        }
        if let Some(d) = self.drain_timeout {
            flag("drain-timeout", duration_arg(d));
        }
        if let Some(w) = &self.workspace {
            flag("workspace", w.display().to_string());
        }
        if let Some(u) = &self.run_as {
            flag("run-as", u.clone());
        }
        args
    }
}

/// How one control-plane server runs. Unset fields take the documented defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on (`IP:PORT`, `localhost:PORT`, `:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A non-loopback `listen` is accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote: bool,
    /// A non-loopback `listen` without TLS is accepted (tokens then cross the network in
    /// clear text).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// The certificate chain (PEM, absolute) served over TLS; with `tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// The private key (PEM, absolute) of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// A SQLite file (absolute) or a `postgres://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Finished jobs are deleted after this long.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    pub retention: Option<Duration>,
    /// How often workers heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    pub heartbeat_interval: Option<Duration>,
    /// An attempt without a heartbeat for this long is lost.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    pub lease_ttl: Option<Duration>,
    /// Total size of stored step logs, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_size")]
    pub log_quota: Option<u64>,
    /// PostgreSQL: pooled connections at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_pool_size: Option<u32>,
    /// PostgreSQL: statement timeout (zero: the database's own).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    pub db_statement_timeout: Option<Duration>,
    /// PostgreSQL: longest wait for a pooled connection.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_duration")]
    pub db_pool_timeout: Option<Duration>,
    /// The key-encryption key's file (absolute): secrets are sealed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<String>,
}

impl ServerSettings {
    /// `--listen`'s default.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7777";
    /// `--retention`'s default: 30 days.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
    /// `--heartbeat-interval`'s default.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
    /// `--lease-ttl`'s default.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

    /// The listen address as given (else the default), parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, SettingError> {
        parse_listen(self.listen.as_deref().unwrap_or(Self::DEFAULT_LISTEN))
    }

    /// Retention in force.
    pub fn retention(&self) -> Duration {
        self.retention.unwrap_or(Self::DEFAULT_RETENTION)
    }

    /// Heartbeat interval in force.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(Self::DEFAULT_HEARTBEAT_INTERVAL)
    }

    /// Lease TTL in force.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(Self::DEFAULT_LEASE_TTL)
    }

    /// Lays `top` over these settings: every field `top` sets replaces this one's.
    pub fn overlay(&mut self, top: &ServerSettings) {
        macro_rules! take {
            ($($f:ident),*) => { $( if top.$f.is_some() { self.$f = top.$f.clone(); } )* };
        }
        take!(
            listen,
            database,
            retention,
            heartbeat_interval,
            lease_ttl,
            log_quota,
            db_pool_size,
            db_statement_timeout,
            db_pool_timeout,
            secret_key_file,
            tls_cert,
            tls_key
        );
        self.allow_remote |= top.allow_remote;
        self.insecure_http |= top.insecure_http;
    }

    /// Whether the server serves TLS (`--tls-cert` and `--tls-key`).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// A saved file of a release before TLS that listens remotely over plain HTTP: it
    /// keeps doing so (`insecure_http` set) so an upgrade does not stop a running fleet.
    /// True when it changed something (the caller says so and rewrites the file).
    pub fn keep_plain_http_on_upgrade(&mut self) -> bool {
        let remote = self.listen_addr().is_ok_and(|l| !l.ip().is_loopback());
        if remote && self.allow_remote && !self.tls() && !self.insecure_http {
            self.insecure_http = true;
            return true;
        }
        false
    }

    /// The timing and size rules the flags have, for settings from anywhere.
    pub fn check(&self) -> Result<(), SettingError> {
        let listen = self.listen_addr()?;
        if !listen.ip().is_loopback() && !self.allow_remote {
            return Err(bad(
                "--listen",
                format!(
                    "{listen} is not a loopback address, so other machines could reach the server; \
                     pass --allow-remote as well if that is what you want"
                ),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(bad("--tls-cert", "needs --tls-key FILE (the certificate's private key)"));
            }
            (None, Some(_)) => return Err(bad("--tls-key", "needs --tls-cert FILE (the certificate chain)")),
            _ => {}
        }
        if !listen.ip().is_loopback() && !self.tls() && !self.insecure_http {
            return Err(bad(
                "--listen",
                format!(
                    "{listen} is not a loopback address and the server has no TLS, so tokens would \
                     cross the network in clear text; pass --tls-cert FILE --tls-key FILE, or \
                     --insecure-http as well if that is what you want"
                ),
            ));
        }
        if self.heartbeat_interval().is_zero() {
            return Err(bad("--heartbeat-interval", "must be greater than zero"));
        }
        if self.lease_ttl() <= self.heartbeat_interval() {
            return Err(bad(
                "--lease-ttl",
                format!(
                    "{} must be longer than --heartbeat-interval {} (a lease must survive a late heartbeat)",
                    humantime::format_duration(self.lease_ttl()),
                    humantime::format_duration(self.heartbeat_interval())
                ),
            ));
        }
        if self.log_quota == Some(0) {
            return Err(bad("--log-quota", "must be greater than zero"));
        }
        if self.db_pool_size.is_some_and(|n| n == 0 || n > 1000) {
            return Err(bad("--db-pool-size", "must be within 1..=1000"));
        }
        if self.db_pool_timeout.is_some_and(|t| t.is_zero()) {
            return Err(bad("--db-pool-timeout", "must be greater than zero"));
        }
        Ok(())
    }

    /// The `rota` arguments that run this server in the foreground: `server --flag value`.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec!["server".to_string()];
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        if let Some(l) = &self.listen {
            flag("listen", l.clone());
        }
        if let Some(d) = &self.database {
            flag("database", d.clone());
        }
        if let Some(d) = self.retention {
            flag("retention", duration_arg(d));
        }
        if let Some(d) = self.heartbeat_interval {
            flag("heartbeat-interval", duration_arg(d));
        }
        if let Some(d) = self.lease_ttl {
            flag("lease-ttl", duration_arg(d));
        }
        if let Some(q) = self.log_quota {
            flag("log-quota", q.to_string());
        }
        if let Some(n) = self.db_pool_size {
            flag("db-pool-size", n.to_string());
        }
        if let Some(d) = self.db_statement_timeout {
            flag("db-statement-timeout", duration_arg(d));
        }
        if let Some(d) = self.db_pool_timeout {
            flag("db-pool-timeout", duration_arg(d));
        }
        if let Some(f) = &self.secret_key_file {
            flag("secret-key-file", f.clone());
        }
        if let Some(f) = &self.tls_cert {
            flag("tls-cert", f.clone());
        }
        if let Some(f) = &self.tls_key {
            flag("tls-key", f.clone());
        }
        if self.allow_remote {
            args.push("--allow-remote".into());
        }
        if self.insecure_http {
            args.push("--insecure-http".into());
        }
        args
    }
}

/// A duration as one flag value that `units::parse_duration` reads back exactly
/// (`45s`, `1m 30s`, `250ms`).
fn duration_arg(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `127.0.0.1:7777`, `[::1]:7777`, `localhost:7777` or `:7777` (loopback).
pub fn parse_listen(s: &str) -> Result<SocketAddr, SettingError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = s.strip_prefix("localhost:").or_else(|| s.strip_prefix(':'));
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => Err(bad("--listen", format!("'{s}': expected IP:PORT, e.g. 127.0.0.1:7777"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_duration;

    fn full() -> WorkerSettings {
        WorkerSettings {
            server: Some("http://a:7777,http://b:7777".into()),
            name: Some("w 1".into()),
            profile: Some("ci".into()),
            namespace: Some("team-a".into()),
            queues: vec!["build".into(), "deploy".into()],
            tags: vec!["gpu".into()],
            concurrency: None,
            autoscale: Some(Autoscale { min: 2, max: 6 }),
            scale_up_step: Some(3),
            scale_down_step: Some(1),
            idle_period: Some(Duration::from_millis(20_500)),
            cooldown: Some(Duration::from_secs(90)),
            max_jobs: Some(500),
            max_memory: Some(1 << 30),
            drain_timeout: Some(Duration::from_secs(45)),
            workspace: Some("/srv/ws".into()),
            run_as: Some("builder:docker".into()),
        }
    }

    #[test]
    fn overlay_replaces_only_what_the_top_sets() {
        let mut s = full();
        s.overlay(&WorkerSettings::default());
        assert_eq!(s, full(), "an empty overlay changes nothing");
        s.overlay(&WorkerSettings { concurrency: Some(4), tags: vec!["cpu".into()], ..Default::default() });
        assert_eq!(s.concurrency, Some(4));
        assert_eq!(s.autoscale, None, "a fixed concurrency drops autoscale");
        assert_eq!(s.tags, ["cpu"]);
        assert_eq!(s.queues, ["build", "deploy"]);
        s.overlay(&WorkerSettings { autoscale: Some(Autoscale { min: 1, max: 2 }), ..Default::default() });
        assert_eq!((s.concurrency, s.autoscale), (None, Some(Autoscale { min: 1, max: 2 })));
        s.check().unwrap();
    }

    #[test]
    fn json_is_camel_case_with_readable_units_and_reads_back() {
        let s = full();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["drainTimeout"], "45s");
        assert_eq!(v["idlePeriod"], "20s 500ms");
        assert_eq!(v["maxMemory"], 1u64 << 30);
        assert_eq!(v["autoscale"], serde_json::json!({"min": 2, "max": 6}));
        assert!(v.get("concurrency").is_none(), "unset fields are left out");
        let back: WorkerSettings = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        let unknown = serde_json::json!({"queues": ["a"], "queus": ["b"]});
        let err = serde_json::from_value::<WorkerSettings>(unknown).unwrap_err();
        assert!(err.to_string().contains("queus"), "{err}");
    }

    #[test]
    fn run_args_name_every_setting_and_durations_parse_back() {
        let args = full().run_args();
        assert_eq!(args[..4], ["--server", "http://a:7777,http://b:7777", "worker", "run"]);
        let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());
        assert_eq!(value("--autoscale").as_deref(), Some("2,6"));
        assert_eq!(value("--name").as_deref(), Some("w 1"));
        assert_eq!(parse_duration(&value("--idle-period").unwrap()), Ok(Duration::from_millis(20_500)));
        assert_eq!(parse_duration(&value("--cooldown").unwrap()), Ok(Duration::from_secs(90)));
        assert_eq!(args.iter().filter(|a| *a == "--queue").count(), 2);
        assert_eq!(WorkerSettings::default().run_args(), ["worker", "run"]);
    }

    #[test]
    fn checks_name_the_setting() {
        let e = WorkerSettings { concurrency: Some(0), ..Default::default() }.check().unwrap_err();
        assert_eq!(e.field, "--concurrency");
        let e = WorkerSettings {
            concurrency: Some(2),
            autoscale: Some(Autoscale { min: 1, max: 2 }),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.field, "--autoscale");
        assert!(Autoscale::parse("3,2").is_err());
        assert_eq!(Autoscale::parse("2, 8"), Ok(Autoscale { min: 2, max: 8 }));
    }

    #[test]
    fn server_settings_default_check_and_derive_args() {
        let s = ServerSettings::default();
        assert_eq!(s.listen_addr().unwrap().port(), 7777);
        s.check().unwrap();
        assert_eq!(s.serve_args(), ["server"]);
        let s = ServerSettings {
            listen: Some("0.0.0.0:7000".into()),
            retention: Some(Duration::from_secs(7 * 86_400)),
            log_quota: Some(1 << 30),
            ..Default::default()
        };
        assert_eq!(s.check().unwrap_err().field, "--listen");
        let s = ServerSettings { allow_remote: true, ..s };
        let e = s.check().unwrap_err();
        assert!(e.field == "--listen" && e.message.contains("--insecure-http"), "{e}");
        let tls =
            ServerSettings { tls_cert: Some("/c.pem".into()), tls_key: Some("/k.pem".into()), ..s.clone() };
        tls.check().unwrap();
        let half = ServerSettings { tls_key: None, ..tls.clone() };
        assert_eq!(half.check().unwrap_err().field, "--tls-cert");
        let mut upgraded = s.clone();
        assert!(upgraded.keep_plain_http_on_upgrade(), "a remote plain-HTTP file keeps plain HTTP");
        assert!(!upgraded.clone().keep_plain_http_on_upgrade(), "once");
        assert!(!tls.clone().keep_plain_http_on_upgrade(), "a TLS server needs nothing");
        let s = ServerSettings { insecure_http: true, ..s };
        s.check().unwrap();
        assert_eq!(
            s.serve_args(),
            [
                "server",
                "--listen",
                "0.0.0.0:7000",
                "--retention",
                "7days",
                "--log-quota",
                "1073741824",
                "--allow-remote",
                "--insecure-http"
            ]
        );
        let late = ServerSettings { lease_ttl: Some(Duration::from_secs(2)), ..Default::default() };
        assert_eq!(late.check().unwrap_err().field, "--lease-ttl");
        assert!(parse_listen("localhost:7777").unwrap().ip().is_loopback());
        assert!(parse_listen("[::1]:7").unwrap().ip().is_loopback());
        assert!(parse_listen("example.com:80").is_err());
    }
}
