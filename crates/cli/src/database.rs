//! Which database a server runs on, from `--database` / `ROTA_DATABASE`: a SQLite file
//! (`PATH` or `sqlite:PATH`) or PostgreSQL (`postgres://…`, shown without its password).
//! Any other `scheme://` is a usage error naming the accepted forms; before, any text
//! became a SQLite file named after it. Nothing here opens anything.

use crate::config::Paths;
use crate::failure::usage;
use anyhow::Result;
use rota_store_postgres::url::{PgUrl, PgUrlError};
use std::fmt;
use std::path::{Path, PathBuf};

/// The accepted forms of `--database`, for messages.
pub(crate) const FORMS: &str = "a SQLite file (PATH or sqlite:PATH) or a PostgreSQL URL \
     (postgres://USER@HOST:PORT/DATABASE)";

/// A server's database.
#[derive(Clone, Debug)]
pub(crate) enum Database {
    /// A SQLite file (one server).
    Sqlite(PathBuf),
    /// A PostgreSQL database (any number of servers).
    Postgres(Box<PgUrl>),
}

impl Database {
    /// `--database` as given, or the default SQLite file.
    pub(crate) fn from_flag(given: Option<&Path>, paths: &Paths) -> Result<Self> {
        match given {
            Some(given) => Self::parse(given, "--database"),
            None => Ok(Self::Sqlite(paths.database())),
        }
    }

    /// `given` as the value of `flag` (named in messages).
    pub(crate) fn parse(given: &Path, flag: &str) -> Result<Self> {
        let Some(text) = given.to_str() else { return Ok(Self::Sqlite(given.to_path_buf())) };
        if let Some(rest) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
            if rest.is_empty() {
                return Err(usage(format!("{flag} {text}: no file after sqlite:; expected {FORMS}")));
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        if PgUrl::is_postgres(text) {
            let url = PgUrl::parse(text).map_err(|e| match e {
                // A TLS parameter: the form of the URL is fine, the message names the parameter.
                PgUrlError::SslMode(_) | PgUrlError::Tls(_) => usage(format!("{flag}: {e}")),
                _ => usage(format!("{flag}: {e}; expected {FORMS}")),
            })?;
            return Ok(Self::Postgres(Box::new(url)));
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            // Not echoed whole: a URL may carry a password.
            return Err(usage(format!("{flag}: unknown scheme {scheme}://; expected {FORMS}")));
        }
        Ok(Self::Sqlite(given.to_path_buf()))
    }

    /// ` --database X` when this is not the default database, for a command line a message
    /// suggests (a PostgreSQL URL is shown without its password).
    pub(crate) fn flag(&self, paths: &Paths) -> String {
        let shown = match self {
            Self::Sqlite(p) if *p == paths.database() => return String::new(),
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(u) => u.to_string(),
        };
        format!(" {}", rota_lifecycle::shell::join_quoted(&["--database", &shown]))
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(u) => write!(f, "{u}"),
        }
    }
}
