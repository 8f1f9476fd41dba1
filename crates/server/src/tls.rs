//! TLS on the server's listener: the served certificate and key (PEM files, read again by
//! [`ServerTls::reload`]: new connections get the new pair, open ones keep theirs), the
//! accept loop that runs handshakes off the accept path, and the expiry warning. Installs no
//! signal handler: the CLI calls `reload` on SIGHUP.

use chrono::{DateTime, Utc};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A certificate that expires within this long is warned about, at start, at each reload
/// and daily.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// A client that has not finished its handshake by then is dropped (it holds no request).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate or key cannot be served: the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is read but its content cannot be used.
    #[error("{}: {problem}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// A certificate chain with its key, ready to serve.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: DateTime<Utc>,
}

#[derive(Debug)]
struct Inner {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

/// The server's TLS identity; clones share it, so a reload through any clone is seen by
/// every new connection.
#[derive(Clone, Debug)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl ServerTls {
    /// Reads `cert` (a PEM chain, leaf first) and `key` (its PEM private key).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = read_pair(cert, key, &provider)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                provider,
                current: RwLock::new(Arc::new(loaded)),
            }),
        })
    }

    /// Reads the two files again. On success new connections get the new certificate (open
    /// ones keep theirs) and its expiry is returned; on failure the served pair is kept.
    pub fn reload(&self) -> Result<DateTime<Utc>, TlsError> {
        let loaded = read_pair(&self.inner.cert, &self.inner.key, &self.inner.provider)?;
        let not_after = loaded.not_after;
        match self.inner.current.write() {
            Ok(mut current) => *current = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        warn_if_expiring(self);
        Ok(not_after)
    }

    /// When the served leaf certificate expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.current().not_after
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.inner.cert
    }

    fn current(&self) -> Arc<Loaded> {
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A rustls acceptor whose certificate is looked up at each handshake.
    fn acceptor(&self) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // axum serves HTTP/1.1 only (no `http2` feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Hands each handshake the pair in force when it starts.
#[derive(Debug)]
struct Resolver(ServerTls);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let bad = |path: &Path, problem: String| TlsError::Bad { path: path.to_path_buf(), problem };
    let pem = read_file(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate file: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(cert, "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into()));
    };
    let not_after =
        not_after(leaf).map_err(|e| bad(cert, format!("its first certificate cannot be read: {e}")))?;
    let pem = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        bad(key, format!("holds no usable private key (expected a PEM PKCS#8, RSA or EC key): {e}"))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad(key, format!("the private key cannot be used: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(bad(key, format!("is not the private key of the certificate in {}", cert.display())));
    }
    Ok(Loaded { key: Arc::new(certified), not_after })
}

/// The leaf's `notAfter`.
fn not_after(leaf: &CertificateDer<'_>) -> Result<DateTime<Utc>, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
    let secs = cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs();
    let secs = i64::try_from(secs).map_err(|_| "its expiry is out of range".to_string())?;
    DateTime::from_timestamp(secs, 0).ok_or_else(|| "its expiry is out of range".to_string())
}

/// Logs a warning when the served certificate expires within [`EXPIRY_WARNING`].
fn warn_if_expiring(tls: &ServerTls) {
    let not_after = tls.not_after();
    let left = not_after - Utc::now();
    let warn = chrono::Duration::from_std(EXPIRY_WARNING).unwrap_or(chrono::Duration::MAX);
    if left <= chrono::Duration::zero() {
        tracing::warn!(%not_after, file = %tls.cert_path().display(), "the TLS certificate has expired: clients refuse it; replace the file and send SIGHUP");
    } else if left < warn {
        tracing::warn!(%not_after, days = left.num_days(), file = %tls.cert_path().display(), "the TLS certificate expires within 14 days: replace the file and send SIGHUP");
    }
}

/// Warns about the certificate's expiry now and then daily, until shutdown.
pub(crate) async fn watch_expiry(tls: ServerTls, shutdown: CancellationToken) {
    loop {
        warn_if_expiring(&tls);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(86_400)) => {}
        }
    }
}

/// The TLS side of the listener for `axum::serve`: a task accepts TCP connections and
/// runs each handshake in a task of its own (a slow client never holds up the others);
/// finished handshakes queue here.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: &ServerTls) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = tls.acceptor().map_err(std::io::Error::other)?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(Self { ready, addr, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: axum's own listener also waits and goes on.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, queue) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = queue.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
        if ready.is_closed() {
            return;
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends once nobody listens here.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
