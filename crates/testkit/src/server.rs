//! The one way to start a real `rota server` process on port 0 with its own data: in the
//! HOME/XDG tree at `root` (tokens in `root/data/rota`), waiting for its
//! `rota server listening on URL` line. Used by [`crate::Env`], [`crate::cluster`] and the
//! bench; it reports failures as [`KitError`]s rather than panicking.

use crate::KitError;
use crate::proc::{Proc, Tap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The line the server prints once it listens; the URL is its last word.
pub const LISTENING: &str = "rota server listening on ";

/// The directories of a HOME/XDG tree at `root`.
pub fn make_tree(root: &Path) -> std::io::Result<()> {
    for d in ["home", "data", "state", "config", "runtime"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

/// How to start a server.
pub struct Spec {
    /// The `rota` binary.
    pub bin: PathBuf,
    /// Its HOME/XDG tree (made if missing).
    pub root: PathBuf,
    /// `host:port` to listen on (port 0: a fresh one).
    pub listen: String,
    /// More `rota server` flags.
    pub args: Vec<String>,
    /// `ROTA_LOG`.
    pub log_filter: String,
    /// Collect its stderr in memory (off for long runs that only tap it).
    pub keep_output: bool,
    /// Sees every stderr line.
    pub tap: Option<Tap>,
    /// How long it may take to listen.
    pub within: Duration,
    /// More environment variables (e.g. the lossy test bus's).
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// `bin` in the tree at `root`, on `127.0.0.1:0`, logging at `info`, output kept.
    pub fn new(bin: &Path, root: &Path) -> Self {
        Self {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            args: Vec::new(),
            log_filter: "info".into(),
            keep_output: true,
            tap: None,
            within: Duration::from_secs(30),
            env: Vec::new(),
        }
    }
}

/// A running server.
pub struct Server {
    /// The process (stopped on drop).
    pub proc: Proc,
    /// `http://host:port`.
    pub url: String,
}

impl Server {
    /// The admin token it uses (written in its data directory on first start).
    pub fn admin_token(root: &Path) -> Result<String, KitError> {
        read_token(&root.join("data/rota/admin.token"))
    }

    /// The join token workers present.
    pub fn join_token(root: &Path) -> Result<String, KitError> {
        read_token(&root.join("data/rota/join.token"))
    }
}

/// A token file's trimmed text.
pub fn read_token(path: &Path) -> Result<String, KitError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| KitError::Read { path: path.to_path_buf(), source })
}

/// Starts the server described by `spec` and waits until it listens.
pub fn start(spec: Spec) -> Result<Server, KitError> {
    make_tree(&spec.root).map_err(|source| KitError::Read { path: spec.root.clone(), source })?;
    let mut cmd = Command::new(&spec.bin);
    crate::isolate_tree(&mut cmd, &spec.root, None);
    cmd.env("ROTA_LOG", &spec.log_filter).args(["server", "--listen", &spec.listen]).args(&spec.args);
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let (proc, line) = Proc::try_spawn(cmd, LISTENING, spec.within, spec.keep_output, spec.tap)?;
    let url =
        line.split_whitespace().last().unwrap_or_default().trim_end_matches(['/', ',', '.']).to_string();
    Ok(Server { proc, url })
}

/// Another server in `env`'s tree (same token files) on `database`, with the kit's lease
/// timings: several servers of one control plane (PostgreSQL). Panics if it cannot start.
pub fn start_beside(env: &crate::Env, database: &str) -> Server {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let spec = Spec {
        args: vec![
            "--heartbeat-interval".into(),
            ms(crate::HEARTBEAT),
            "--lease-ttl".into(),
            ms(crate::LEASE_TTL),
            "--database".into(),
            database.into(),
        ],
        ..Spec::new(crate::rota_bin(), env.dir.path())
    };
    start(spec).unwrap_or_else(|e| panic!("{e}"))
}
