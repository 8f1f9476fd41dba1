//! TLS on a real server on port 0: a reload serves the new certificate to new connections
//! while a keep-alive connection opened before it goes on working; a reload of a bad file
//! keeps the served certificate; `/healthz` shows the expiry; a client that does not trust
//! the issuer says so (`ClientError::certificate_problem`), one given the CA gets through;
//! the dashboard's session cookie is `Secure`.

#![allow(clippy::unwrap_used)]

use rota_server::ServerConfig;
use rota_server::tls::ServerTls;
use rota_store_sqlite::{SqliteOptions, SqliteStore};
use rota_testkit::certs::TestCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const YEAR: Duration = Duration::from_secs(365 * 86_400);

type Conn = BufReader<TlsStream<TcpStream>>;

fn der(pem: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem).unwrap()
}

/// A TLS connection trusting `ca`; returns it and the leaf certificate the server sent.
async fn connect(addr: SocketAddr, ca: &Path) -> (Conn, CertificateDer<'static>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    (BufReader::new(tls), leaf)
}

/// One keep-alive `GET path` on `conn`: (status, body).
async fn get(conn: &mut Conn, path: &str) -> (u16, String) {
    let (status, _, body) = exchange(conn, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")).await;
    (status, body)
}

/// Sends `request` on `conn` and reads one response: (status, header lines, body).
async fn exchange(conn: &mut Conn, request: &str) -> (u16, String, String) {
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (mut len, mut headers) = (0usize, String::new());
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
        headers.push_str(&line);
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    (code, headers, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_pem = ca.write(&dir.path().join("ca.pem"));
    let first = ca.issue(dir.path(), "first", &["127.0.0.1"], YEAR);
    let second = ca.issue(dir.path(), "second", &["127.0.0.1"], YEAR * 2);
    let (cert, key) = (dir.path().join("served.pem"), dir.path().join("served.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let tls = ServerTls::load(&cert, &key).unwrap();

    let store: Arc<dyn rota_store::JobStore> =
        Arc::new(SqliteStore::open(&dir.path().join("rota.db"), SqliteOptions::default()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        admin_token: "admin".into(),
        join_token: "join".into(),
        tls: Some(tls.clone()),
        ..ServerConfig::default()
    };
    let stop = CancellationToken::new();
    let serving = tokio::spawn(rota_server::run(listener, store, config, stop.clone()));

    let (mut open, leaf) = connect(addr, &ca_pem).await;
    assert_eq!(leaf, der(&first.cert), "the first certificate is served");
    let (status, body) = get(&mut open, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["tlsNotAfter"].as_str().unwrap(), serde_json::to_value(tls.not_after()).unwrap());

    // Replace both files and reload: new connections get the new pair.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let not_after = tls.reload().unwrap();
    assert!(not_after > chrono::Utc::now() + chrono::Duration::days(365 + 300), "{not_after}");
    let (mut fresh, leaf) = connect(addr, &ca_pem).await;
    assert_eq!(leaf, der(&second.cert), "a new connection gets the new certificate");
    assert_eq!(get(&mut fresh, "/healthz").await.0, 200);
    // The connection opened before the reload keeps working.
    assert_eq!(get(&mut open, "/healthz").await.0, 200, "the open connection was dropped");

    // A bad file: the reload fails naming it, the served certificate stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains(cert.to_str().unwrap()) && err.contains("holds no certificate"), "{err}");
    let (_, leaf) = connect(addr, &ca_pem).await;
    assert_eq!(leaf, der(&second.cert), "the old certificate is still served");
    assert_eq!(tls.not_after(), not_after);

    // The dashboard's session cookie is `Secure` under TLS.
    let form = "token=admin";
    let login = format!(
        "POST /ui/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let (status, headers, body) = exchange(&mut fresh, &login).await;
    assert_eq!(status, 303, "{headers}{body}");
    let cookie =
        headers.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap_or_default();
    assert!(cookie.contains("HttpOnly") && cookie.ends_with("; Secure"), "{headers}");

    // The client: without the CA it names the problem; with it, it gets through.
    let url = format!("https://{addr}");
    let err = rota_client::Client::new(&url, None).unwrap().healthz().await.unwrap_err();
    let problem = err.certificate_problem();
    assert!(problem.as_deref().is_some_and(|p| p.contains("UnknownIssuer")), "{problem:?}: {err:?}");
    let trusted = rota_client::CaCerts::from_pem_file(&ca_pem).unwrap();
    let health = rota_client::Client::trusting(&url, None, &trusted).unwrap().healthz().await.unwrap();
    assert!(health.tls_not_after.is_some(), "{health:?}");

    stop.cancel();
    serving.await.unwrap().unwrap();
}
