//! TLS to PostgreSQL (issue 12), through a real TLS path: the test kit's
//! [`PgTlsProxy`] terminates TLS in front of the test server. `sslmode=require` puts every
//! connection a server opens (the pool, the bus's LISTEN, the leader's lock) on TLS and
//! runs a job end to end; `verify-full` checks the CA and the host name and a failure names
//! host:port; `require` against a server without TLS fails clearly; bad TLS parameters are
//! usage errors; the password shows nowhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::pg_tls_proxy::{Answer, PgTlsProxy};
use rota_testkit::postgres::TestDb;
use rota_testkit::{Env, rota, spawn_worker, submit, wait_for_end};
use std::time::Instant;

const PASSWORD: &str = "s3cretPW";

/// `url` with a password in its user-info (the test server trusts local connections, so
/// it is never checked: it is there to be kept out of every message).
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}:{PASSWORD}@{host}")
}

/// `rota server` on `database` that must fail at start: its exit code and stderr.
fn server_refused(env: &Env, database: &str) -> (Option<i32>, String) {
    let started = Instant::now();
    let out = rota(env).args(["server", "--listen", "127.0.0.1:0", "--database", database]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("refused after {:?}: {}", started.elapsed(), stderr.trim());
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
    (out.status.code(), stderr)
}

#[test]
fn sslmode_require_puts_every_connection_on_tls_and_runs_a_job() {
    let Some(db) = TestDb::create_blocking() else { return };
    let proxy = PgTlsProxy::for_test_server(Answer::Tls);
    let url = proxy.url(&with_password(&db.url), "127.0.0.1", "sslmode=require");
    let mut env = Env::new();
    env.start_server(&["--database", &url]);
    let _w = spawn_worker(&env, "w1", &[]);
    let id = submit(&env, &["--", "sh", "-c", "echo over-tls"]);
    let end = wait_for_end(&env, &id);
    assert_eq!(end["state"], "succeeded", "{end}");
    let out = rota(&env).args(["job", "logs", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("over-tls"));

    let sessions = proxy.sessions();
    eprintln!("the proxy saw {} sessions, {} over TLS", sessions.len(), proxy.tls_sessions());
    assert!(sessions.iter().all(|s| s.tls), "a plaintext session: {sessions:?}");
    let names: Vec<String> = sessions.iter().filter_map(|s| s.application_name.clone()).collect();
    for role in ["rota", "rota-bus ", "rota-leader "] {
        assert!(
            names.iter().any(|n| if role == "rota" { n == role } else { n.starts_with(role) }),
            "no TLS session of {role:?}: {names:?}"
        );
    }
    let log = env.server_log();
    assert!(!log.contains(PASSWORD), "the password is in the server's log: {log}");
}

#[test]
fn verify_full_checks_the_ca_and_the_host_name() {
    let Some(db) = TestDb::create_blocking() else { return };
    let proxy = PgTlsProxy::for_test_server(Answer::Tls);
    let other = PgTlsProxy::for_test_server(Answer::Tls);
    let db_url = with_password(&db.url);
    let ca = proxy.ca_pem().display().to_string();

    // The certificate names localhost: reached as localhost, with its CA, it is accepted.
    let mut env = Env::new();
    let good = proxy.url(&db_url, "localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    env.start_server(&["--database", &good]);
    let id = submit(&env, &["--", "true"]);
    assert!(!id.is_empty());
    env.stop_server();
    assert!(proxy.tls_sessions() > 0);

    // Reached as 127.0.0.1, a name the certificate does not hold: refused, naming host:port.
    let port = proxy.addr().port();
    let wrong_name = proxy.url(&db_url, "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let (code, stderr) = server_refused(&env, &wrong_name);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");

    // verify-ca does not compare the name: the same URL with verify-ca starts.
    let ca_only = proxy.url(&db_url, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    env.start_server(&["--database", &ca_only]);
    env.stop_server();

    // Another CA's certificate: refused (verify-full and verify-ca alike).
    let other_ca = other.ca_pem().display().to_string();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = proxy.url(&db_url, "localhost", &format!("sslmode={mode}&sslrootcert={other_ca}"));
        let (code, stderr) = server_refused(&env, &url);
        assert_eq!(code, Some(1), "{mode}: {stderr}");
        assert!(stderr.contains(&format!("localhost:{port}")), "{mode}: {stderr}");
        assert!(stderr.contains("certificate"), "{mode}: {stderr}");
    }
}

#[test]
fn sslmode_require_against_a_server_without_tls_fails_clearly() {
    let Some(db) = TestDb::create_blocking() else { return };
    let plain = PgTlsProxy::for_test_server(Answer::Plain);
    let env = Env::new();
    let url = plain.url(&with_password(&db.url), "127.0.0.1", "sslmode=require");
    let (code, stderr) = server_refused(&env, &url);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{}", plain.addr().port())), "{stderr}");
    assert!(stderr.contains("does not support TLS"), "{stderr}");

    // prefer (the default) goes on in plaintext, as libpq does.
    let mut env = Env::new();
    env.start_server(&["--database", &plain.url(&db.url, "127.0.0.1", "")]);
    assert!(plain.sessions().iter().any(|s| !s.tls && s.application_name.as_deref() == Some("rota")));
}

#[test]
fn bad_tls_parameters_are_usage_errors_naming_the_parameter() {
    let env = Env::new();
    let base = format!("postgres://rota:{PASSWORD}@127.0.0.1:1/rota");
    let (code, stderr) = server_refused(&env, &format!("{base}?sslmode=verify"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sslmode=verify: expected disable, prefer, require"), "{stderr}");
    let missing = env.path("no-such-ca.pem");
    let (code, stderr) =
        server_refused(&env, &format!("{base}?sslmode=verify-full&sslrootcert={}", missing.display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("sslrootcert={}", missing.display())), "{stderr}");
}
