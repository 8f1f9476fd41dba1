//! TLS to the database, with libpq's `sslmode` meanings, through rustls (aws-lc-rs, the one
//! crypto provider of the binary; no OpenSSL). Owns the [`SslMode`] a URL asks for, the
//! root certificates it trusts and the rustls client configuration every connection rota
//! opens is made with (the pool and the dedicated ones); must not parse URLs (`url.rs`
//! does) nor open connections.
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no; with `sslrootcert`, the chain (as `verify-ca`) |
//! | `verify-ca` | always | the chain, against `sslrootcert` or the system's roots |
//! | `verify-full` | always | the chain and the host name |

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values (`allow` is not offered: it only differs from `prefer` by
/// trying plain first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, the certificate chain checked against the trusted roots.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The accepted values, for messages.
    pub const VALUES: &'static str = "disable, prefer, require, verify-ca or verify-full";

    /// Parses an `sslmode` value; `None` if it is not one of [`SslMode::VALUES`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// What the driver is told: it knows whether to ask for TLS, not how to check it.
    pub(crate) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// What a URL asks of TLS: the mode and the roots it trusts.
#[derive(Clone, Debug, Default)]
pub struct TlsChoice {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: the file and the certificates read from it when the URL was parsed.
    pub root_cert: Option<RootCert>,
}

/// The certificates of an `sslrootcert` file.
#[derive(Clone, Debug)]
pub struct RootCert {
    /// Where they were read from.
    pub path: PathBuf,
    certs: Arc<Vec<CertificateDer<'static>>>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The `sslrootcert` file cannot be read or holds no PEM certificate.
    #[error("sslrootcert={path}: {detail}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// `verify-ca`/`verify-full` without `sslrootcert`, and the system has no usable roots.
    #[error(
        "sslmode={mode} checks the server's certificate, but no sslrootcert=PATH was given and \
         no system CA certificates could be loaded"
    )]
    NoRoots {
        /// The mode asked for.
        mode: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl RootCert {
    /// Reads the PEM certificates of `path`; at least one is required.
    pub fn read(path: &Path) -> Result<Self, TlsError> {
        let fail = |detail: String| TlsError::RootCert { path: path.to_path_buf(), detail };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(fail("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        Ok(Self { path: path.to_path_buf(), certs: Arc::new(certs) })
    }
}

/// The driver's TLS connector for `choice` (built even for `disable`, which never uses it).
pub(crate) fn connector(choice: &TlsChoice) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // libpq: `require` with a root certificate file behaves as `verify-ca`.
    let checks = match (choice.mode, &choice.root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Checks::Nothing,
        (SslMode::Require | SslMode::VerifyCa, _) => Checks::Chain,
        (SslMode::VerifyFull, _) => Checks::ChainAndName,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match checks {
        Checks::Nothing => Arc::new(AcceptAny { algorithms }),
        Checks::Chain | Checks::ChainAndName => {
            let roots = roots(choice)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            if checks == Checks::Chain { Arc::new(ChainOnly { inner: webpki }) } else { webpki }
        }
    };
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    Nothing,
    Chain,
    ChainAndName,
}

/// `sslrootcert`'s certificates, else the system's.
fn roots(choice: &TlsChoice) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &choice.root_cert {
        Some(rc) => {
            let (added, _ignored) = roots.add_parsable_certificates(rc.certs.iter().cloned());
            if added == 0 {
                return Err(TlsError::RootCert {
                    path: rc.path.clone(),
                    detail: "none of its certificates can be used as a root".into(),
                });
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                let mode = if choice.mode == SslMode::VerifyFull { "verify-full" } else { "verify-ca" };
                return Err(TlsError::NoRoots { mode });
            }
        }
    }
    Ok(roots)
}

/// `prefer` and `require` without roots: encryption, no authentication of the server (as
/// libpq). The handshake signatures are still checked, so the session is with the holder
/// of the certificate's key.
#[derive(Debug)]
struct AcceptAny {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// compared with the host (webpki checks the chain before the name, so a name mismatch
/// means the chain passed).
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_and_others_do_not() {
        for (s, m) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(s), Some(m));
        }
        assert_eq!(SslMode::parse("allow"), None);
        assert_eq!(SslMode::parse("REQUIRE"), None);
    }

    #[test]
    fn a_root_cert_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("rota-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = RootCert::read(&empty).unwrap_err();
        assert!(e.to_string().starts_with(&format!("sslrootcert={}", empty.display())), "{e}");
        let e = RootCert::read(&dir.join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
