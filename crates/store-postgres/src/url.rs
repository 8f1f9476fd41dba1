//! A PostgreSQL database URL as the user gave it (`postgres://` or `postgresql://`), parsed
//! by the driver and shown without its password: every message, log line and status that
//! names the database uses [`PgUrl`]'s `Display`, never the text it was parsed from.
//! The TLS parameters the driver does not know (`sslmode=verify-ca|verify-full`,
//! `sslrootcert=PATH`) are taken out here into a [`TlsChoice`] (`tls.rs` acts on it); a bad
//! `sslmode` or an unreadable `sslrootcert` is refused here, naming the parameter.

use crate::tls::{RootCert, SslMode, TlsChoice, TlsError};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// What a `postgres://…` URL failed on.
#[derive(Debug, thiserror::Error)]
pub enum PgUrlError {
    /// Not a `postgres://` / `postgresql://` URL at all.
    #[error("not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE)")]
    NotPostgres,
    /// The driver refused it (the reason never includes the password).
    #[error("malformed PostgreSQL URL: {0}")]
    Malformed(String),
    /// `sslmode` has a value libpq does not define (or one rota does not offer).
    #[error("sslmode={0}: expected {values}", values = SslMode::VALUES)]
    SslMode(String),
    /// `sslrootcert` cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A parsed database URL; `Display` shows it with the password replaced by `***`.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: TlsChoice,
    shown: String,
    raw: String,
}

impl PgUrl {
    /// Whether `s` asks for PostgreSQL (its scheme), whatever else it holds.
    pub fn is_postgres(s: &str) -> bool {
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    /// Parses `s`; errors name what is wrong, never the password.
    pub fn parse(s: &str) -> Result<Self, PgUrlError> {
        if !Self::is_postgres(s) {
            return Err(PgUrlError::NotPostgres);
        }
        let (driver_text, tls) = take_tls_params(s)?;
        let mut config = tokio_postgres::Config::from_str(&driver_text)
            .map_err(|e| PgUrlError::Malformed(redact(&e.to_string(), &driver_text)))?;
        if config.get_hosts().is_empty() {
            return Err(PgUrlError::Malformed("no host (postgres://USER@HOST:PORT/DATABASE)".into()));
        }
        config.ssl_mode(tls.mode.driver_mode());
        Ok(Self { shown: redact_url(s), config, tls, raw: s.to_string() })
    }

    /// What the URL asks of TLS (`sslmode`, `sslrootcert`).
    pub fn tls(&self) -> &TlsChoice {
        &self.tls
    }

    /// The URL as given, password included: only for connecting, never to show.
    pub fn connect_text(&self) -> &str {
        &self.raw
    }

    /// The driver's settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// `host:port` of each host, for "cannot reach" messages.
    pub fn endpoints(&self) -> Vec<String> {
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect()
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

/// `s` without its `sslmode` and `sslrootcert` parameters (the driver knows neither
/// `verify-*` nor `sslrootcert`), and what they asked for. The last of a repeated
/// parameter wins, as in libpq.
fn take_tls_params(s: &str) -> Result<(String, TlsChoice), PgUrlError> {
    let Some((base, query)) = s.split_once('?') else { return Ok((s.to_string(), TlsChoice::default())) };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root: Option<PathBuf> = None;
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                let v = percent_decode(v);
                mode = Some(SslMode::parse(&v).ok_or(PgUrlError::SslMode(v))?);
            }
            "sslrootcert" => root = Some(PathBuf::from(percent_decode(v))),
            _ => kept.push(kv),
        }
    }
    let root_cert = root.map(|p| RootCert::read(&p)).transpose()?;
    let tls = TlsChoice { mode: mode.unwrap_or_default(), root_cert };
    let text = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((text, tls))
}

/// `s` (a `postgres://` URL) with a relative `sslrootcert` made absolute, for a URL saved to
/// be used later from another working directory (`rota server start`); the rest as given.
pub fn with_absolute_root_cert(s: &str) -> std::io::Result<String> {
    let Some((base, query)) = s.split_once('?') else { return Ok(s.to_string()) };
    let mut parts = Vec::new();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("sslrootcert", v)) if !v.is_empty() && !percent_decode(v).starts_with('/') => {
                let path = std::path::absolute(percent_decode(v))?;
                let text = path.to_string_lossy();
                let encoded: String = text
                    .chars()
                    .map(|c| match c {
                        '%' | '&' | '#' | '+' | ' ' | '?' | '=' => format!("%{:02X}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                parts.push(format!("sslrootcert={encoded}"));
            }
            _ => parts.push(kv.to_string()),
        }
    }
    Ok(format!("{base}?{}", parts.join("&")))
}

/// `%XX` escapes decoded (as the driver decodes URL parameters); a stray `%` stays.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` with the password of its user-info (`user:password@`) and any `password=` option
/// replaced by `***`.
fn redact_url(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(scheme_end) = out.find("://").map(|i| i + 3) {
        let rest_end = out[scheme_end..].find(['/', '?']).map_or(out.len(), |i| scheme_end + i);
        if let Some(at) = out[scheme_end..rest_end].rfind('@').map(|i| scheme_end + i)
            && let Some(colon) = out[scheme_end..at].find(':').map(|i| scheme_end + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| {
                if kv.to_ascii_lowercase().starts_with("password=") {
                    "password=***".to_string()
                } else {
                    kv.to_string()
                }
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// A driver message about `url`, with the password taken out should it quote it.
fn redact(message: &str, url: &str) -> String {
    let config = tokio_postgres::Config::from_str(url).ok();
    match config.as_ref().and_then(|c| c.get_password()).and_then(|p| std::str::from_utf8(p).ok()) {
        Some(p) if !p.is_empty() => message.replace(p, "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let u = PgUrl::parse("postgres://rota:s3cret@db.example:6432/rota?sslmode=require").unwrap();
        assert_eq!(u.to_string(), "postgres://rota:***@db.example:6432/rota?sslmode=require");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.endpoints(), ["db.example:6432"]);
        let u = PgUrl::parse("postgresql://rota@h/db?password=s3cret&connect_timeout=5").unwrap();
        assert_eq!(u.to_string(), "postgresql://rota@h/db?password=***&connect_timeout=5");
        assert_eq!(u.endpoints(), ["h:5432"]);
    }

    #[test]
    fn tls_parameters_are_taken_out_for_the_driver() {
        let u = PgUrl::parse("postgres://u:pw@h/db?sslmode=verify-full&connect_timeout=5").unwrap();
        assert_eq!(u.tls().mode, SslMode::VerifyFull);
        assert_eq!(u.config().get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(u.config().get_connect_timeout(), Some(&std::time::Duration::from_secs(5)));
        let u = PgUrl::parse("postgres://u@h/db").unwrap();
        assert_eq!(u.tls().mode, SslMode::Prefer, "libpq's default");
        let u = PgUrl::parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(u.config().get_ssl_mode(), tokio_postgres::config::SslMode::Disable);

        let e = PgUrl::parse("postgres://u:pw@h/db?sslmode=bogus").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sslmode=bogus: expected disable, prefer, require, verify-ca or verify-full"
        );
        let e =
            PgUrl::parse("postgres://u:pw@h/db?sslmode=require&sslrootcert=%2Fno%2Fsuch.pem").unwrap_err();
        assert!(e.to_string().starts_with("sslrootcert=/no/such.pem: cannot read it"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn a_relative_root_cert_is_made_absolute_for_later() {
        let cwd = std::env::current_dir().unwrap();
        let u = with_absolute_root_cert("postgres://u@h/db?sslmode=verify-full&sslrootcert=ca.pem").unwrap();
        assert_eq!(
            u,
            format!("postgres://u@h/db?sslmode=verify-full&sslrootcert={}", cwd.join("ca.pem").display())
        );
        let given = "postgres://u:pw@h/db?sslrootcert=/etc/ca.pem&connect_timeout=5";
        assert_eq!(with_absolute_root_cert(given).unwrap(), given);
        assert_eq!(with_absolute_root_cert("postgres://u@h/db").unwrap(), "postgres://u@h/db");
    }

    #[test]
    fn other_schemes_and_malformed_urls_are_refused() {
        assert!(matches!(PgUrl::parse("mysql://u@h/db"), Err(PgUrlError::NotPostgres)));
        assert!(matches!(PgUrl::parse("/var/lib/rota.db"), Err(PgUrlError::NotPostgres)));
        assert!(PgUrl::is_postgres("POSTGRES://u@h/db"));
        let e = PgUrl::parse("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(matches!(e, PgUrlError::Malformed(_)), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
