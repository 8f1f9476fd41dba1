//! Validated settings built from the raw flags in `args.rs`, plus where rota keeps its files
//! (XDG data dir: the default database, the token files, the dev workspace). Errors here
//! are usage errors (exit 2); nothing here opens a socket or a database.

use crate::args::GlobalArgs;
use crate::database::Database;
use crate::failure::usage;
use anyhow::{Context, Result};
use rota_domain::settings::ServerSettings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where rota keeps its files on this machine.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    /// `$XDG_DATA_HOME/rota`: database, tokens, workspace.
    pub(crate) data_dir: PathBuf,
}

impl Paths {
    /// The per-user directories (`XDG_DATA_HOME` is honoured, else `~/.local/share`).
    pub(crate) fn from_env() -> Result<Self> {
        let dirs = directories::ProjectDirs::from("", "", "rota")
            .context("cannot find a home directory for rota's files (is HOME set?)")?;
        Ok(Self { data_dir: dirs.data_dir().to_path_buf() })
    }

    /// The default SQLite database.
    pub(crate) fn database(&self) -> PathBuf {
        self.data_dir.join("rota.db")
    }

    /// The admin token file.
    pub(crate) fn admin_token(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The join token file.
    pub(crate) fn join_token(&self) -> PathBuf {
        self.data_dir.join("join.token")
    }

    /// The default secret key file.
    pub(crate) fn secret_key(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }
}

/// What `rota server` (and the server half of `rota dev`) runs with: its
/// [`ServerSettings`] checked and resolved against this machine (defaults filled in, the
/// database opened as a path or URL).
#[derive(Clone, Debug)]
pub(crate) struct ServerSetup {
    pub(crate) listen: SocketAddr,
    pub(crate) database: Database,
    pub(crate) retention: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) lease_ttl: Duration,
    /// `--log-quota`, if given (else a share of the free space, see `log_quota.rs`).
    pub(crate) log_quota: Option<u64>,
    /// The pool and timeouts of a PostgreSQL database (`--db-*`; unused on SQLite).
    pub(crate) pg: rota_store_postgres::PgOptions,
    /// The secret key file (`--secret-key-file`, else the data directory's).
    pub(crate) secret_key_file: PathBuf,
    /// `--tls-cert` and `--tls-key`: serve HTTPS.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

impl ServerSetup {
    pub(crate) fn from_settings(s: &ServerSettings, paths: &Paths) -> Result<Self> {
        s.check().map_err(usage)?;
        let listen = s.listen_addr().map_err(usage)?;
        let database = Database::from_flag(s.database.as_deref().map(Path::new), paths)?;
        let pg = pg_options(s, &database)?;
        Ok(Self {
            listen,
            database,
            retention: s.retention(),
            heartbeat_interval: s.heartbeat_interval(),
            lease_ttl: s.lease_ttl(),
            log_quota: s.log_quota,
            pg,
            secret_key_file: s.secret_key_file.as_ref().map_or_else(|| paths.secret_key(), PathBuf::from),
            tls: s
                .tls_cert
                .as_ref()
                .zip(s.tls_key.as_ref())
                .map(|(c, k)| (PathBuf::from(c), PathBuf::from(k))),
        })
    }
}

/// The `--db-*` settings as [`PgOptions`]. They tune a PostgreSQL pool, so given with a
/// SQLite database they are a usage error (rather than a warning nobody reads: the
/// operator believes the server is tuned when it is not).
fn pg_options(s: &ServerSettings, database: &Database) -> Result<rota_store_postgres::PgOptions> {
    let given = [
        ("--db-pool-size", s.db_pool_size.is_some()),
        ("--db-statement-timeout", s.db_statement_timeout.is_some()),
        ("--db-pool-timeout", s.db_pool_timeout.is_some()),
    ];
    if let Database::Sqlite(path) = database
        && let Some((flag, _)) = given.iter().find(|(_, given)| *given)
    {
        return Err(usage(format!(
            "{flag}: applies to a PostgreSQL database (--database postgres://…) only; this server's \
             database is the SQLite file {}",
            path.display()
        )));
    }
    let defaults = rota_store_postgres::PgOptions::default();
    Ok(rota_store_postgres::PgOptions {
        pool_size: s.db_pool_size.map_or(defaults.pool_size, |n| n as usize),
        statement_timeout: match s.db_statement_timeout {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => defaults.statement_timeout,
        },
        pool_timeout: s.db_pool_timeout.unwrap_or(defaults.pool_timeout),
        ..defaults
    })
}

/// How to reach the control plane as an operator.
#[derive(Clone, Debug)]
pub(crate) struct ClientSettings {
    /// Base URL, e.g. `http://127.0.0.1:7777`.
    pub(crate) server: String,
    /// Admin token, if one was given or found.
    pub(crate) token: Option<String>,
    /// What is trusted over `https://` besides the system roots (`--ca-cert`).
    pub(crate) ca: rota_client::CaCerts,
}

impl ClientSettings {
    /// `--token`/`ROTA_TOKEN`, else the local admin.token file if there is one.
    pub(crate) fn from_args(global: &GlobalArgs, paths: &Paths) -> Result<Self> {
        let token = match &global.token {
            Some(t) => Some(t.trim().to_string()),
            None => crate::tokens::read(&paths.admin_token())?,
        };
        Ok(Self { server: server_url(&global.server)?, token, ca: ca_certs(global)? })
    }
}

/// `--ca-cert`/`ROTA_CA_CERT` read (exit 78 naming the file when it cannot be used), or
/// the system roots only.
pub(crate) fn ca_certs(global: &GlobalArgs) -> Result<rota_client::CaCerts> {
    match &global.ca_cert {
        Some(f) => rota_client::CaCerts::from_pem_file(f)
            .map_err(|e| crate::failure::with_code(crate::failure::EXIT_CONFIG, anyhow::Error::new(e))),
        None => Ok(rota_client::CaCerts::default()),
    }
}

/// Normalizes `--server` (each `host:port`, `:port`, `host` or a URL; repeated, or
/// comma-separated as in `ROTA_SERVER=a:7777,b:7777`) to base URLs without a trailing `/`,
/// with the client's own rules (a bare host gets port 7777), joined by commas: the one form
/// the clients take, the background worker saves and `rota worker run` is given. A bad
/// entry is a usage error naming it.
pub(crate) fn server_url(entries: &[String]) -> Result<String> {
    let urls = rota_client::server_urls(&entries.join(",")).map_err(|e| usage(format!("--server: {e}")))?;
    Ok(urls.iter().map(|u| u.as_str().trim_end_matches('/')).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<String> {
        server_url(&[s.to_string()])
    }

    #[test]
    fn server_urls() {
        assert_eq!(one("zeus:7777").unwrap(), "http://zeus:7777");
        assert_eq!(one("https://r.example/").unwrap(), "https://r.example");
        assert_eq!(one(":7777").unwrap(), "http://127.0.0.1:7777");
        assert!(one("ftp://x").is_err());
    }

    #[test]
    fn server_lists_from_repeated_flags_and_commas() {
        let list = |v: &[&str]| server_url(&v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["a:7777", "b"]).unwrap(), "http://a:7777,http://b:7777");
        assert_eq!(list(&["a:7777,https://b.example/"]).unwrap(), "http://a:7777,https://b.example");
        // The joined form is read back as the same list (saved settings, `worker run`).
        let joined = list(&["a:7777", ":9000"]).unwrap();
        assert_eq!(one(&joined).unwrap(), joined);
        for (bad, named) in [(&["a:7777", "ftp://b"][..], "ftp://b"), (&["a:7777", ""][..], "entry 2")] {
            let err = list(bad).unwrap_err();
            let f = err.downcast_ref::<crate::failure::Failure>().expect("a usage error");
            assert_eq!(f.code, crate::failure::EXIT_USAGE);
            assert!(format!("{err:#}").contains(named), "{bad:?}: {err:#}");
        }
    }
}
