//! Issue 18, acceptance 1: a fleet over TLS. Test hosts are network namespaces
//! (`rota_testkit::netns`), the certificates come from a test CA (`rota_testkit::certs`).
//! A worker with `--ca-cert` runs a job; one without exits 78 naming the certificate
//! problem; a packet capture on the veth shows the join token over plain HTTP and not over
//! TLS; SIGHUP reloads the certificate (a bad one is refused and the old one kept); a bad
//! certificate at start exits 78 naming the file. Waits are bounded and print what they saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::{Cleanup, code, json, run, stderr, stdout};
use rota_testkit::certs::TestCa;
use rota_testkit::netns::Host;
use rota_testkit::require::require;
use rota_testkit::{Env, HEARTBEAT, LEASE_TTL, Proc, bound, rota, submit, wait_for_end, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A year: far from the expiry warning.
const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn tcpdump_available() -> bool {
    require(
        Command::new("tcpdump").arg("--version").output().is_ok_and(|o| o.status.success()),
        "tcpdump",
        "apt-get install tcpdump (.ci/run installs it)",
    )
}

/// `tcpdump` writing every packet of `interface` to `file` until [`Capture::stop`].
struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    fn start(interface: &str, file: &Path) -> Capture {
        let mut cmd = Command::new("tcpdump");
        // --immediate-mode: each packet is handed over as it arrives (not in blocks a stop
        // would throw away); -U: and written at once; -s 0: whole packets.
        cmd.args(["-i", interface, "--immediate-mode", "-s", "0", "-U", "-n", "-w"]).arg(file);
        let (proc, _) = Proc::spawn(cmd, "listening on");
        Capture { proc, file: file.to_path_buf() }
    }

    /// Stops the capture and returns what it wrote.
    fn stop(mut self) -> Vec<u8> {
        // Until the file stops growing (the last packets of the worker's exit).
        let size = || std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let (t, mut last) = (Instant::now(), size());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = size();
            if now == last || t.elapsed() > bound() {
                break;
            }
            last = now;
        }
        self.proc.terminate(bound());
        eprintln!("tcpdump: {}", self.proc.output().trim());
        std::fs::read(&self.file).expect("the capture file")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A server of `tree` listening over TLS on `addr` with a certificate of `ca` for it.
fn tls_server(tree: &mut Env, ca: &TestCa, addr: &str, valid: Duration) -> rota_testkit::certs::Issued {
    let issued = ca.issue(tree.dir.path(), "server", &[addr], valid);
    let (cert, key) = (issued.cert.to_str().unwrap(), issued.key.to_str().unwrap());
    tree.start_server_at(
        addr,
        HEARTBEAT,
        LEASE_TTL,
        &["--allow-remote", "--tls-cert", cert, "--tls-key", key],
    );
    tree.ca_cert = Some(ca.write(&tree.path("ca.pem")));
    issued
}

/// Acceptance 1: a worker on another host with `--ca-cert` runs a job over TLS; one
/// without the CA exits 78 naming the problem, and so does the CLI. SIGHUP with a bad key
/// keeps the old certificate; the server still serves.
#[test]
fn a_worker_with_the_ca_runs_a_job_over_tls_and_one_without_exits_78() {
    let began = Instant::now();
    let ca = TestCa::new();
    let (mut trusted, mut stranger) = (Host::new("tls-a"), Host::new("tls-b"));
    let mut server = Env::new();
    let addr = trusted.ns.host_addr.to_string();
    // Ten days: inside the 14-day warning.
    let issued = tls_server(&mut server, &ca, &addr, Duration::from_secs(10 * 86_400));
    assert!(server.url.starts_with("https://"), "{}", server.url);
    wait_until(bound(), "the expiry warning at start", || {
        server.server_log().contains("expires within 14 days")
    });
    let token = server.join_token();
    for h in [&mut trusted, &mut stranger] {
        h.env.url = server.url.clone();
    }
    let ca_file = ca.write(&trusted.env.path("ca.pem"));
    let ca_file = ca_file.to_str().unwrap();

    let worker = trusted.spawn_worker("tls-w", &["--join-token", &token, "--ca-cert", ca_file]);
    let job = submit(&server, &["--on", "tls-w", "--step", "s=echo over tls"]);
    let done = wait_for_end(&server, &job);
    assert_eq!(done["state"], "succeeded", "{done:#}\n{}", worker.output());
    eprintln!("a job ran over TLS after {:?}", began.elapsed());

    // No CA: refused at registration, exit 78, naming the certificate problem.
    let ws = stranger.workspace("tls-x");
    let mut refused = Proc::start(stranger.rota(&[
        "worker",
        "run",
        "--name",
        "tls-x",
        "--workspace",
        ws.to_str().unwrap(),
        "--join-token",
        &token,
    ]));
    let t = Instant::now();
    let exit = refused.wait_exit(bound());
    let said = refused.output();
    eprintln!("the worker without the CA exited {exit:?} after {:?}", t.elapsed());
    assert_eq!(exit, Some(78), "{said}");
    assert!(
        said.contains("the server's certificate is not trusted: UnknownIssuer")
            && said.contains("--ca-cert FILE or set ROTA_CA_CERT"),
        "{said}"
    );
    let o = stranger.rota(&["job", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("the server's certificate is not trusted: UnknownIssuer"), "{err}");

    // SIGHUP with a renewed certificate (a year): read again, served to new connections.
    let renewed = ca.issue(server.dir.path(), "renewed", &[&addr], YEAR);
    std::fs::copy(&renewed.cert, &issued.cert).unwrap();
    std::fs::copy(&renewed.key, &issued.key).unwrap();
    server.server().unwrap().proc.signal("HUP");
    wait_until(bound(), "the reload in the server's log", || {
        server.server_log().contains("TLS certificate reloaded")
    });
    let o = rota(&server).args(["job", "list"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // SIGHUP with a key that is not a key: logged, the old certificate kept.
    std::fs::write(&issued.key, "not a key\n").unwrap();
    server.server().unwrap().proc.signal("HUP");
    wait_until(bound(), "the reload error in the server's log", || {
        server.server_log().contains("TLS certificate not reloaded")
    });
    assert!(server.server_log().contains(issued.key.to_str().unwrap()), "the error names the file");
    let job = submit(&server, &["--on", "tls-w", "--step", "s=echo still"]);
    assert_eq!(wait_for_end(&server, &job)["state"], "succeeded");
    drop(worker);
    eprintln!("took {:?}", began.elapsed());
}

/// Acceptance 1, the capture: the join token crosses a plain-HTTP link in clear (so the
/// capture sees the worker's traffic), and does not cross a TLS link.
#[test]
fn a_capture_on_the_veth_sees_the_join_token_over_http_and_not_over_tls() {
    if !tcpdump_available() {
        return;
    }
    let began = Instant::now();
    let mut host = Host::new("tls-cap");
    let addr = host.ns.host_addr.to_string();
    let pcap = tempfile::tempdir().unwrap();

    let mut plain = Env::new();
    plain.start_server_at(&addr, HEARTBEAT, LEASE_TTL, &["--allow-remote", "--insecure-http"]);
    let token = plain.join_token();
    host.env.url = plain.url.clone();
    let capture = Capture::start(&host.ns.host_if, &pcap.path().join("plain.pcap"));
    let worker = host.spawn_worker("cap-plain", &["--join-token", &token]);
    drop(worker);
    let bytes = capture.stop();
    eprintln!("plain HTTP: {} bytes captured", bytes.len());
    assert!(contains(&bytes, token.as_bytes()), "the capture must see the token over plain HTTP");

    let ca = TestCa::new();
    let mut secure = Env::new();
    tls_server(&mut secure, &ca, &addr, YEAR);
    let token = secure.join_token();
    host.env.url = secure.url.clone();
    let ca_file = ca.write(&host.env.path("ca.pem"));
    let capture = Capture::start(&host.ns.host_if, &pcap.path().join("tls.pcap"));
    let worker =
        host.spawn_worker("cap-tls", &["--join-token", &token, "--ca-cert", ca_file.to_str().unwrap()]);
    let job = submit(&secure, &["--on", "cap-tls", "--step", "s=echo hidden"]);
    assert_eq!(wait_for_end(&secure, &job)["state"], "succeeded");
    drop(worker);
    let bytes = capture.stop();
    eprintln!("TLS: {} bytes captured", bytes.len());
    assert!(bytes.len() > 2000, "the capture saw the TLS traffic ({} bytes)", bytes.len());
    assert!(!contains(&bytes, token.as_bytes()), "the join token crossed the TLS link in clear");
    assert!(!contains(&bytes, b"/worker/register"), "a request line crossed the TLS link in clear");
    eprintln!("took {:?}", began.elapsed());
}

/// A certificate or key that cannot be served fails the start with 78, naming the file
/// and the problem; one flag without the other is a usage error.
#[test]
fn a_bad_certificate_at_start_exits_78_naming_the_file() {
    let env = Env::new();
    let ca = TestCa::new();
    let good = ca.issue(env.dir.path(), "good", &["127.0.0.1"], YEAR);
    let other = ca.issue(env.dir.path(), "other", &["127.0.0.1"], YEAR);
    let missing = env.path("missing.pem");
    let garbage = env.path("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let cases: [(&Path, &Path, &Path, &str); 3] = [
        (&missing, &good.key, &missing, "cannot read"),
        (&garbage, &good.key, &garbage, "holds no certificate"),
        (&good.cert, &other.key, &other.key, "is not the private key of the certificate"),
    ];
    for (cert, key, named, problem) in cases {
        let o = rota(&env)
            .args(["server", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(78), "{err}");
        assert!(err.contains(named.to_str().unwrap()) && err.contains(problem), "{problem}: {err}");
    }
    let o = rota(&env)
        .args(["server", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&good.cert)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    // `rota dev` stays plain HTTP on loopback.
    let o = rota(&env)
        .args(["dev", "--tls-cert"])
        .arg(&good.cert)
        .arg("--tls-key")
        .arg(&good.key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rota dev serves plain HTTP on loopback"), "{err}");
}

/// The background forms: `rota server start` with TLS saves the certificate and serves it
/// (`rota server status` shows its expiry); a background worker on another host started
/// with `--ca-cert` joins, its supervisor's link reports it running, and it runs a job.
#[test]
fn a_background_server_and_a_background_worker_over_tls() {
    let began = Instant::now();
    let ca = TestCa::new();
    let mut host = Host::new("tls-bg");
    let addr = host.ns.host_addr.to_string();
    let mut server = Env::new();
    let _stop_server = Cleanup::new(&server);
    let issued = ca.issue(server.dir.path(), "server", &[&addr], YEAR);
    server.ca_cert = Some(ca.write(&server.path("ca.pem")));
    let listen = format!("{addr}:0");
    let (cert, key) = (issued.cert.to_str().unwrap(), issued.key.to_str().unwrap());
    let o = run(
        &server,
        &[
            "server",
            "start",
            "--json",
            "--listen",
            &listen,
            "--allow-remote",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    server.url = json(&o)["name"].as_str().unwrap().to_string();
    assert!(server.url.starts_with("https://"), "{}", stdout(&o));
    let o = run(&server, &["server", "status"]);
    assert!(stdout(&o).contains("tls: certificate expires "), "{}{}", stdout(&o), stderr(&o));

    host.env.url = server.url.clone();
    let _stop_worker = Cleanup::new(&host.env);
    let token = server.join_token();
    let ca_file = ca.write(&host.env.path("ca.pem"));
    let o = host
        .rota(&["worker", "start", "--json", "--join-token", &token, "--ca-cert", ca_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    wait_until(bound(), "the other host's supervisor reports running over TLS", || {
        let o = run(&server, &["worker", "list", "--json"]);
        json(&o)["supervisors"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["state"] == "running" && s["host"] == host.hostname.as_str()))
    });
    let job = submit(&server, &["--on", &host.hostname, "--step", "s=echo background"]);
    assert_eq!(wait_for_end(&server, &job)["state"], "succeeded");
    eprintln!("took {:?}", began.elapsed());
}
