//! What a client trusts over `https://` besides the system roots (`--ca-cert`,
//! `ROTA_CA_CERT`), and telling a certificate the client refused apart from a server that
//! is down. Reads the CA file once; opens no connection.

use crate::error::ClientError;
use std::path::{Path, PathBuf};

/// CA certificates trusted besides the system roots; empty: the system roots only.
#[derive(Clone, Default)]
pub struct CaCerts {
    certs: Vec<reqwest::Certificate>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCerts").field("file", &self.file).field("certs", &self.certs.len()).finish()
    }
}

impl CaCerts {
    /// Every certificate of a PEM file (a bundle may hold several).
    pub fn from_pem_file(path: &Path) -> Result<Self, ClientError> {
        let bad = |problem: String| ClientError::CaCert { path: path.to_path_buf(), problem };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("is not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("holds no certificate (expected -----BEGIN CERTIFICATE-----)".into()));
        }
        Ok(Self { certs, file: Some(path.to_path_buf()) })
    }

    /// The file they came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn certificates(&self) -> impl Iterator<Item = reqwest::Certificate> + '_ {
        self.certs.iter().cloned()
    }
}

/// Why the client refused the server's certificate, if that is what `err` (or one of its
/// causes) says: `the server's certificate is not trusted: UnknownIssuer`.
pub(crate) fn certificate_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // hyper-util and tokio-rustls wrap rustls' error in io::Errors (nested), whose
        // `source` skips the wrapped error itself: step into it.
        cause = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => format!("the server's certificate is not trusted: {c:?}"),
        other => format!("the TLS handshake with the server failed: {other}"),
    }
}
