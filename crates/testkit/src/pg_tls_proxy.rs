//! [`PgTlsProxy`]: a real TLS path to the test PostgreSQL server, whose own TLS the tests
//! cannot configure. It listens on 127.0.0.1 (port 0), answers PostgreSQL's `SSLRequest`
//! with `S` and does a rustls server handshake with a certificate for `localhost` made by
//! a CA of its own ([`PgTlsProxy::ca_pem`]), or answers `N` (a server without TLS,
//! [`Answer::Plain`]); then it forwards the session in plaintext to the real server. It
//! records each session (TLS or not, its `application_name`), so a test can tell which of
//! the code's connections went through TLS. Owns no PostgreSQL logic beyond the first
//! message of a session. On a thread and runtime of its own: usable from sync and async
//! tests alike; stopped on drop.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// `SSLRequest`'s code; `GSSENCRequest`'s (refused with `N`, as a server without GSSAPI).
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// How the proxy answers a client that asks for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `S`, then a TLS handshake.
    Tls,
    /// `N`: like a server with `ssl = off`.
    Plain,
}

/// One client session the proxy forwarded.
#[derive(Clone, Debug)]
pub struct Session {
    /// Whether it ran over TLS.
    pub tls: bool,
    /// The `application_name` of its startup message, if it sent one.
    pub application_name: Option<String>,
}

/// A running proxy; stopped (and its files removed) on drop.
pub struct PgTlsProxy {
    addr: SocketAddr,
    ca_pem: PathBuf,
    sessions: Arc<Mutex<Vec<Session>>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl PgTlsProxy {
    /// A proxy in front of `upstream` (`host:port` of a PostgreSQL server reached in
    /// plaintext), answering TLS requests as `answer` says.
    pub fn start(upstream: &str, answer: Answer) -> PgTlsProxy {
        let dir = tempfile::tempdir().expect("tempdir for the proxy's CA");
        let (ca_pem, cert, key) = make_certificates();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem).expect("write ca.pem");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("the proxy's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (upstream, seen, stopped) = (upstream.to_string(), sessions.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let (client, _) = tokio::select! {
                        () = stopped.cancelled() => break,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let (upstream, seen, acceptor) = (upstream.clone(), seen.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        // A session that fails (the client gave up on a bad certificate, the
                        // server went away) just ends, as it would on a real server.
                        let _ = serve(client, &upstream, answer, acceptor, seen).await;
                    });
                }
            });
            rt.shutdown_background();
        });
        PgTlsProxy { addr, ca_pem: ca_path, sessions, stop, thread: Some(thread), _dir: dir }
    }

    /// A proxy in front of the server `ROTA_TEST_POSTGRES_URL` names.
    pub fn for_test_server(answer: Answer) -> PgTlsProxy {
        let url = std::env::var(crate::postgres::URL_ENV).expect("ROTA_TEST_POSTGRES_URL");
        let config: tokio_postgres::Config = url.parse().expect("ROTA_TEST_POSTGRES_URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Self::start(&format!("{host}:{port}"), answer)
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM file of the CA that signed its certificate (for `sslrootcert=`).
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// `db_url` (a test database's URL) pointed at this proxy as `host` (e.g. `localhost`
    /// or `127.0.0.1`), with `params` (e.g. `sslmode=require`) added to its query.
    pub fn url(&self, db_url: &str, host: &str, params: &str) -> String {
        let (base, query) = db_url.split_once('?').map_or((db_url, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let (authority, path) = base[scheme_end..].split_once('/').unwrap_or((&base[scheme_end..], ""));
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
        let mut url = format!("{}{user}{host}:{}/{path}", &base[..scheme_end], self.addr.port());
        let query: Vec<&str> = query.into_iter().chain([params]).filter(|q| !q.is_empty()).collect();
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        url
    }

    /// The sessions so far.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many sessions ran over TLS.
    pub fn tls_sessions(&self) -> usize {
        self.sessions().iter().filter(|s| s.tls).count()
    }
}

impl Drop for PgTlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A CA (PEM) and a certificate for `localhost` it signed, with the certificate's key.
fn make_certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: two proxies' CAs are told apart ("unknown issuer", not "bad signature").
    ca.distinguished_name.push(DnType::CommonName, format!("rota test CA {:08x}", rand::random::<u32>()));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (ca_cert.pem(), cert.der().clone(), key)
}

/// One client session: the negotiation, then plaintext both ways to `upstream`.
async fn serve(
    mut client: TcpStream,
    upstream: &str,
    answer: Answer,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Mutex<Vec<Session>>>,
) -> std::io::Result<()> {
    loop {
        let first = read_message(&mut client).await?;
        match code(&first) {
            Some(SSL_REQUEST) if answer == Answer::Tls => {
                client.write_all(b"S").await?;
                let tls = acceptor.accept(client).await?;
                return forward(tls, true, upstream, seen).await;
            }
            Some(SSL_REQUEST | GSSENC_REQUEST) => client.write_all(b"N").await?,
            _ => {
                // The startup message itself (or a cancel request), in plaintext.
                let name = application_name(&first);
                record(&seen, false, name);
                let mut server = TcpStream::connect(upstream).await?;
                server.write_all(&first).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                return Ok(());
            }
        }
    }
}

/// After TLS: reads the startup message (to record it), then forwards both ways.
async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    tls: bool,
    upstream: &str,
    seen: Arc<Mutex<Vec<Session>>>,
) -> std::io::Result<()> {
    let first = read_message(&mut client).await?;
    record(&seen, tls, application_name(&first));
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&first).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

fn record(seen: &Mutex<Vec<Session>>, tls: bool, application_name: Option<String>) {
    if let Ok(mut s) = seen.lock() {
        s.push(Session { tls, application_name });
    }
}

/// A message without a type byte (the first of a session): its 4-byte length, then the rest.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if !(8..=10_000).contains(&n) {
        return Err(std::io::Error::other(format!("not a PostgreSQL startup message (length {n})")));
    }
    let mut msg = len.to_vec();
    msg.resize(n, 0);
    s.read_exact(&mut msg[4..]).await?;
    Ok(msg)
}

/// The request code (or protocol version) of a first message.
fn code(msg: &[u8]) -> Option<u32> {
    msg.get(4..8).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
}

/// `application_name` from a startup message's `name\0value\0…` pairs.
fn application_name(msg: &[u8]) -> Option<String> {
    let mut parts = msg.get(8..)?.split(|b| *b == 0);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k == b"application_name" {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        if k.is_empty() {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_url_is_pointed_at_the_proxy() {
        let p = PgTlsProxy::start("127.0.0.1:1", Answer::Plain);
        let port = p.addr().port();
        assert_eq!(
            p.url("postgres://postgres@127.0.0.1:5432/rota_t_1", "localhost", "sslmode=require"),
            format!("postgres://postgres@localhost:{port}/rota_t_1?sslmode=require")
        );
        assert_eq!(
            p.url("postgres://u:pw@h/db?connect_timeout=5", "127.0.0.1", ""),
            format!("postgres://u:pw@127.0.0.1:{port}/db?connect_timeout=5")
        );
        assert!(std::fs::read_to_string(p.ca_pem()).unwrap_or_default().contains("BEGIN CERTIFICATE"));
    }
}
