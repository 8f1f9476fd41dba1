//! Where background workers keep their files. Metadata, runtime state, logs and secrets
//! live in `$XDG_STATE_HOME/rota/workers` (0700); pid and lock files in
//! `$XDG_RUNTIME_DIR/rota/workers`, or `<state>/rota/run` (0700) when that is unset.
//! Locks must sit on a local filesystem. Nothing here reads or writes the files.

use crate::error::{Error, IoContext, Result};
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The two directories of this user's background workers.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// `$XDG_STATE_HOME/rota/workers`.
    pub state: PathBuf,
    /// `$XDG_RUNTIME_DIR/rota/workers`, else `$XDG_STATE_HOME/rota/run`.
    pub run: PathBuf,
}

impl Dirs {
    /// From `XDG_STATE_HOME` (else `~/.local/state`) and `XDG_RUNTIME_DIR`; relative
    /// values are ignored, as the XDG spec says.
    pub fn from_env() -> Result<Self> {
        let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
        let state_home = match absolute("XDG_STATE_HOME") {
            Some(p) => p,
            None => absolute("HOME")
                .ok_or_else(|| {
                    Error::State("cannot find a state directory: set XDG_STATE_HOME or HOME".into())
                })?
                .join(".local/state"),
        };
        let rota = state_home.join("rota");
        let run = match absolute("XDG_RUNTIME_DIR") {
            Some(p) => p.join("rota").join("workers"),
            None => rota.join("run"),
        };
        Ok(Self { state: rota.join("workers"), run })
    }

    /// Creates both directories (0700) if needed and checks that they are ours and
    /// private.
    pub fn ensure(&self) -> Result<()> {
        ensure_private_dir(&self.state)?;
        ensure_private_dir(&self.run)
    }

    /// The files of one background worker.
    pub fn instance(&self, instance: &Instance) -> InstancePaths {
        let key = instance.key();
        let s = |ext: &str| self.state.join(format!("{key}.{ext}"));
        let r = |ext: &str| self.run.join(format!("{key}.{ext}"));
        InstancePaths {
            meta: s("json"),
            state: s("state.json"),
            default_log: s("log"),
            foreground_log: s("foreground.log"),
            secret: s("secret"),
            token: s("token"),
            default_pidfile: r("pid"),
            lifecycle_lock: r("lifecycle.lock"),
            instance_lock: r("instance.lock"),
            state_lock: r("state.lock"),
            instance: instance.clone(),
            key,
        }
    }
}

/// Creates `dir` (and parents) with mode 0700; refuses a directory owned by someone else
/// and tightens one that others can read.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).at("create", dir)?;
    let meta = std::fs::metadata(dir).at("read", dir)?;
    if meta.uid() != rustix::process::getuid().as_raw() {
        return Err(Error::State(format!(
            "{} belongs to another user (uid {}); refusing to keep worker files there",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .doing(|| format!("cannot make {} private (chmod 700)", dir.display()))?;
    }
    Ok(())
}

/// Which background worker: the one of a profile on this host, or a `multi` node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Instance {
    /// `rota worker start [--profile P]`.
    Profile(String),
    /// `rota worker multi start NODE`.
    Node(String),
    /// `rota server start`: the control plane in the background.
    Server,
}

/// The background server's key.
const SERVER_KEY: &str = "server";

/// The profile used when none is given.
pub const DEFAULT_PROFILE: &str = "default";

impl Instance {
    /// The profile's worker; `None` = the default profile. Names are checked.
    pub fn profile(name: Option<&str>) -> Result<Self> {
        let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_PROFILE);
        check_name("profile", name)?;
        Ok(Self::Profile(name.to_string()))
    }

    /// A `multi` node. Names are checked.
    pub fn node(name: &str) -> Result<Self> {
        check_name("node", name)?;
        Ok(Self::Node(name.to_string()))
    }

    /// File-name key: `default`, `profile-P`, `node-N` or `server` (never colliding).
    pub fn key(&self) -> String {
        match self {
            Self::Profile(p) if p == DEFAULT_PROFILE => DEFAULT_PROFILE.to_string(),
            Self::Profile(p) => format!("profile-{p}"),
            Self::Node(n) => format!("node-{n}"),
            Self::Server => SERVER_KEY.to_string(),
        }
    }

    /// The inverse of [`Instance::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        if key == DEFAULT_PROFILE {
            return Some(Self::Profile(DEFAULT_PROFILE.into()));
        }
        if key == SERVER_KEY {
            return Some(Self::Server);
        }
        let inst = if let Some(p) = key.strip_prefix("profile-") {
            Self::Profile(p.into())
        } else {
            Self::Node(key.strip_prefix("node-")?.into())
        };
        (inst.key() == key && is_valid_name(inst.name())).then_some(inst)
    }

    /// The profile or node name (`server` for the server).
    pub fn name(&self) -> &str {
        match self {
            Self::Profile(n) | Self::Node(n) => n,
            Self::Server => SERVER_KEY,
        }
    }

    /// The flags that select this worker, for messages: `` (default), ` --profile P`.
    pub fn selector(&self) -> String {
        match self {
            Self::Profile(p) if p == DEFAULT_PROFILE => String::new(),
            Self::Profile(p) => format!(" --profile {p}"),
            Self::Node(n) => format!(" --node {n}"),
            Self::Server => String::new(),
        }
    }

    /// The command that shows its status.
    pub fn status_command(&self) -> String {
        match self {
            Self::Profile(_) => format!("rota worker status{}", self.selector()),
            Self::Node(n) => format!("rota worker multi status {n}"),
            Self::Server => "rota server status".into(),
        }
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Profile(p) if p == DEFAULT_PROFILE => f.write_str("the background worker"),
            Self::Profile(p) => write!(f, "the background worker of profile {p}"),
            Self::Node(n) => write!(f, "node {n}"),
            Self::Server => f.write_str("the background server"),
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(Error::usage(format!("{what} '{name}': use 1 to 64 letters, digits, '.', '_' or '-' (not first)")))
}

/// The files of one background worker.
#[derive(Clone, Debug)]
pub struct InstancePaths {
    /// Which worker.
    pub instance: Instance,
    /// Its key (file name stem).
    pub key: String,
    /// Saved settings (`start` flags), written only by `start`.
    pub meta: PathBuf,
    /// Runtime state, written by the supervisor and by `start`/`stop`.
    pub state: PathBuf,
    /// The log unless `--log-path`/`--logfile` says otherwise.
    pub default_log: PathBuf,
    /// `rota worker run --log-file` in the foreground (never the background worker's log).
    pub foreground_log: PathBuf,
    /// The per-instance secret of the local control port (0600).
    pub secret: PathBuf,
    /// The join token given to `start`, if one was (0600).
    pub token: PathBuf,
    /// The pid file unless `--pidfile` says otherwise.
    pub default_pidfile: PathBuf,
    /// Serializes start/stop/restart/heal of this worker.
    pub lifecycle_lock: PathBuf,
    /// Held by the supervisor for its whole life: the liveness proof.
    pub instance_lock: PathBuf,
    /// Serializes read-modify-write of the state file.
    pub state_lock: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_collide() {
        for inst in [
            Instance::profile(None).unwrap(),
            Instance::profile(Some("ci")).unwrap(),
            Instance::node("alpha").unwrap(),
            Instance::node("default").unwrap(),
            Instance::Server,
        ] {
            assert_eq!(Instance::from_key(&inst.key()), Some(inst.clone()), "{inst:?}");
        }
        assert_eq!(Instance::node("default").unwrap().key(), "node-default");
        assert!(Instance::from_key("garbage").is_none());
        assert!(Instance::node("../x").is_err());
        assert!(Instance::profile(Some("a b")).is_err());
    }
}
