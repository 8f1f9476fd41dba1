//! Flags of `rota server` (foreground and background), `rota server rotate-token` and
//! `rota dev`. They parse into [`ServerSettings`], the one type the foreground server,
//! the saved background server and `restart` share; defaults live there, not here.

use super::{SupervisionArgs, WaitArgs, parse_duration, parse_size};
use clap::{Args, Subcommand};
use rota_domain::settings::ServerSettings;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerCmd {
    #[command(subcommand)]
    pub(crate) command: Option<ServerCommand>,
    #[command(flatten)]
    pub(crate) run: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerCommand {
    /// Start the server in the background (or reuse it); returns once it listens.
    Start(Box<ServerStartArgs>),
    /// Stop the background server (SIGTERM: graceful; KILL after 20 s).
    Stop,
    /// Stop the background server, then start it again with its saved flags.
    Restart(WaitArgs),
    /// Show the background server: local process and whether it answers.
    Status,
    /// Replace the admin or join token: writes a new token file and its hash to the store.
    ///
    /// The store keeps only the tokens' hashes, shared by every server on it; deleting a
    /// token file does not replace a token (a server whose store holds one refuses to start
    /// without the file). This command generates a new token into the file (mode 0600) and
    /// stores its hash, with the server stopped or running. A running server switches to the
    /// new token within 30 s.
    /// Clients and workers on other machines need the new file.
    RotateToken(RotateTokenArgs),
}

/// `rota server rotate-token`.
#[derive(Debug, Args)]
pub(crate) struct RotateTokenArgs {
    /// Which token: `admin` (ROTA_TOKEN, admin.token) or `join` (ROTA_JOIN_TOKEN, join.token).
    pub(crate) kind: TokenKind,
    /// The server's database: a SQLite file or a postgres:// URL [default: <data dir>/rota.db].
    #[arg(long, env = "ROTA_DATABASE", value_name = "PATH|URL")]
    pub(crate) database: Option<PathBuf>,
}

/// A token `rota server rotate-token` replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokenKind {
    /// The operator token.
    Admin,
    /// The token workers join with.
    Join,
}

#[derive(Debug, Args)]
pub(crate) struct ServerStartArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) supervision: SupervisionArgs,
}

/// Storage and timing flags shared by `server` and `dev`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on. Port 0 picks a free port (the bound URL is printed)
    /// [default: 127.0.0.1:7777].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Accept a non-loopback --listen address (other machines can then reach the server).
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); with --tls-key. Read
    /// again on SIGHUP (new connections get the new certificate, open ones keep theirs).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Accept a non-loopback --listen address without TLS (tokens then cross the network
    /// in clear text); with --allow-remote.
    #[arg(long)]
    pub(crate) insecure_http: bool,
    /// The database: a SQLite file (PATH or sqlite:PATH; one server) [default: <data
    /// dir>/rota.db], or PostgreSQL (postgres://USER@HOST:PORT/DB; any number of servers).
    #[arg(long, env = "ROTA_DATABASE", value_name = "PATH|URL")]
    pub(crate) database: Option<PathBuf>,
    /// Delete finished jobs and their logs after this long [default: 30d].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) retention: Option<Duration>,
    /// How often workers heartbeat [default: 2s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) heartbeat_interval: Option<Duration>,
    /// An attempt whose worker has not heartbeated for this long is lost [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) lease_ttl: Option<Duration>,
    /// Total size of stored step logs (live bytes, e.g. 2GiB). Past it the oldest finished
    /// jobs' logs are deleted, then new output is cut; both are shown with the logs
    /// [default: 25% of the free space on the database's filesystem at start].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) log_quota: Option<u64>,
    /// PostgreSQL only: connections this server keeps in its pool at most (the bus and
    /// the leadership use one more each) [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) db_pool_size: Option<u32>,
    /// PostgreSQL only: a statement running longer is cancelled by the database and its
    /// request fails; 0 keeps the database's own statement_timeout [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) db_statement_timeout: Option<Duration>,
    /// PostgreSQL only: longest a request waits for a free pooled connection; then it gets
    /// 503 with Retry-After (clients retry or fail over) [default: 5s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) db_pool_timeout: Option<Duration>,
    /// The key-encryption key secrets are sealed with: a file (never an environment
    /// variable). A lone server's first start creates it (mode 0600); every server of a
    /// fleet needs the same file, and a server whose key differs from the one the database
    /// holds refuses to start (exit 78). Losing it loses every secret
    /// [default: <data dir>/secret.key].
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_key_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The settings these flags give: only what was given (the rest keeps its default, or
    /// for `server start`, its saved value).
    pub(crate) fn settings(&self) -> ServerSettings {
        ServerSettings {
            listen: self.listen.clone(),
            allow_remote: self.allow_remote,
            insecure_http: self.insecure_http,
            // Absolute, as the secret key file below.
            tls_cert: self.tls_cert.as_deref().map(absolute_text),
            tls_key: self.tls_key.as_deref().map(absolute_text),
            database: self.database.as_ref().map(|p| p.display().to_string()),
            retention: self.retention,
            heartbeat_interval: self.heartbeat_interval,
            lease_ttl: self.lease_ttl,
            log_quota: self.log_quota,
            db_pool_size: self.db_pool_size,
            db_statement_timeout: self.db_statement_timeout,
            db_pool_timeout: self.db_pool_timeout,
            // Absolute, so a background server started elsewhere finds the same file.
            secret_key_file: self.secret_key_file.as_deref().map(absolute_text),
        }
    }
}

/// A file flag made absolute, so a background server started elsewhere finds the same file.
fn absolute_text(p: &std::path::Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Steps the local worker runs at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) concurrency: u32,
    /// Where steps run [default: <data dir>/workspace].
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
}
