//! `rota-bench --tls`: every server a workload starts serves HTTPS with a certificate from
//! a CA of the run's own (the test kit's [`TestCa`]), and every client and worker trusts
//! that CA (`--ca-cert`). It owns the flag and the files; starting servers is `cluster`'s.
//! The peers are measured over plain loopback, so bench/run's TLS row is rota beside rota.

use anyhow::Result;
use rota_client::CaCerts;
use rota_testkit::certs::TestCa;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

static TLS: OnceLock<bool> = OnceLock::new();

pub(crate) fn set(on: bool) {
    // Set once by `main`, before any workload runs.
    let _ = TLS.set(on);
}

pub(crate) fn on() -> bool {
    TLS.get().copied().unwrap_or(false)
}

/// The files of one server's TLS: the CA the clients trust, the server's pair.
pub(crate) struct Files {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Files {
    /// A fresh CA and a certificate for 127.0.0.1 under `dir`, valid for a day.
    pub(crate) fn issue(dir: &Path) -> Files {
        let ca = TestCa::new();
        let issued = ca.issue(dir, "server", &["127.0.0.1", "localhost"], Duration::from_secs(86_400));
        Files { ca: ca.write(&dir.join("ca.pem")), cert: issued.cert, key: issued.key }
    }

    /// The `rota server` flags that serve this pair.
    pub(crate) fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// What the bench's own clients trust.
    pub(crate) fn trust(&self) -> Result<CaCerts> {
        Ok(CaCerts::from_pem_file(&self.ca)?)
    }
}
