//! A test certificate authority ([`TestCa`]) issuing server certificates for given IP
//! addresses and names, written as PEM files: what `rota server --tls-cert/--tls-key` and
//! `--ca-cert` take. rcgen with aws-lc-rs (no OpenSSL). Owns no server or client logic.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA of its own (a random name: two CAs are told apart as unknown issuers).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate and key, as files.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("rota test CA {:08x}", rand::random::<u32>()));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// Writes the CA certificate to `path` (what `--ca-cert` takes) and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
        path.to_path_buf()
    }

    /// A server certificate for `names` (IP addresses or DNS names), valid for `valid`
    /// from now, written as `<stem>.pem` and `<stem>.key` in `dir`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str], valid: Duration) -> Issued {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("rota"));
        for n in names {
            params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("a DNS name")),
            });
        }
        // Whole days (rcgen's date helper): from yesterday, `valid` from today on.
        let now = chrono::Utc::now();
        let today = {
            use chrono::Datelike;
            rcgen::date_time_ymd(now.year(), now.month() as u8, now.day() as u8)
        };
        params.not_before = today - Duration::from_secs(86_400);
        params.not_after = today + valid;
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let issued = Issued { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
        issued
    }
}
