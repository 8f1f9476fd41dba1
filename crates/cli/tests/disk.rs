//! Disk limits end to end (issue 10, points 2 and 3): a full disk is a 507 naming the
//! database (on a small tmpfs mounted in the server's own mount namespace, never the
//! machine's disk), the total log quota prunes the oldest finished jobs' logs and then cuts
//! new output (recorded, shown, counted in status and metrics), and the log-cap notice
//! counts the bytes the worker dropped before sending. Needs root (`unshare -m`, `mount`):
//! without it the test fails, it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::{Cleanup, code, json, run, stderr, stdout};
use rota_testkit::{Env, Proc, bound, isolate, rota, spawn_server, spawn_worker, submit, wait_for_end};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `rota job submit -f` of a YAML document; returns the job id.
fn submit_doc(env: &Env, name: &str, doc: &str) -> String {
    let path = env.path(&format!("{name}.yaml"));
    std::fs::write(&path, doc).expect("write the job document");
    submit(env, &["-f", path.to_str().expect("utf-8 path")])
}

/// A one-step job writing exactly `bytes` bytes of `yes` output, with an optional log cap.
fn writer_job(env: &Env, name: &str, bytes: u64, log_cap: Option<u64>) -> String {
    let cap = log_cap.map(|c| format!("\n    log_cap: {c}")).unwrap_or_default();
    let doc = format!(
        "name: {name}\nsteps:\n  - name: main\n    run: yes abcdefghijklmnopqrstuvwxyz0123 | head -c {bytes}{cap}\n"
    );
    submit_doc(env, name, &doc)
}

/// `rota job logs ID`: (stdout bytes, stderr text).
fn logs(env: &Env, id: &str) -> (Vec<u8>, String) {
    let out = rota(env).args(["job", "logs", id]).output().expect("rota job logs");
    assert!(out.status.success(), "job logs failed: {}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The body of `GET PATH` from the server at `url` (`http://HOST:PORT`), over plain HTTP/1.0.
fn http_get(url: &str, path: &str) -> String {
    use std::io::Read;
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the server");
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send the request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read the reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The byte count of the notice line containing `what` (`rota: step …: N bytes (…) …`).
fn notice_bytes(notices: &str, what: &str) -> Option<u64> {
    let line = notices.lines().find(|l| l.contains(what))?;
    let before = line.split(" bytes (").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Point 3: a step writing far past its log cap, faster than the worker ships it. The
/// worker drops most of it before sending; the notice must still say exactly how much
/// was cut: everything written but the kept tail.
#[test]
fn the_log_cap_notice_counts_the_bytes_the_worker_dropped() {
    let env = spawn_server();
    let _w = spawn_worker(&env, "w1", &[]);
    let (written, cap) = (20_000_000u64, 256 * 1024u64);
    let started = Instant::now();
    let id = writer_job(&env, "noisy", written, Some(cap));
    let job = wait_for_end(&env, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let (kept, notices) = logs(&env, &id);
    eprintln!("20 MB step with a 256 KiB cap ended and was read in {:?}", started.elapsed());
    assert_eq!(kept.len() as u64, cap, "the cap keeps exactly its size; notices:\n{notices}");
    let line = b"abcdefghijklmnopqrstuvwxyz0123\n";
    let output: Vec<u8> = line.iter().copied().cycle().take(written as usize).collect();
    let tail = &output[output.len() - kept.len()..];
    let first_difference = kept.iter().zip(tail).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the kept bytes are the tail of the output; notices:\n{notices}");
    let cut = notice_bytes(&notices, "cut by the log cap");
    assert_eq!(
        cut,
        Some(written - cap),
        "the notice counts every byte not kept, including those the worker dropped:\n{notices}"
    );
}

/// Point 2, the quota: against a real server on port 0 with a 4 MiB log quota, the logs of
/// the oldest finished job go first; once no finished job has logs left, new output is
/// cut. Every cut is recorded and shown with the job's logs, and the quota's use is in
/// `rota server status` and `/metrics`.
#[test]
fn the_log_quota_prunes_the_oldest_finished_jobs_then_cuts_new_output() {
    let mut env = Env::new();
    let _cleanup = Cleanup::new(&env);
    let quota = 4u64 << 20;
    let o = run(
        &env,
        &[
            "server",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "500ms",
            "--lease-ttl",
            "3s",
            "--log-quota",
            "4MiB",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    env.url = json(&o)["name"].as_str().expect("url").to_string();
    let _w = spawn_worker(&env, "w1", &[]);
    let started = Instant::now();

    // Three finished jobs of 1.5 MiB each: the third passes the quota, so the logs of the
    // first (the oldest finished) are deleted, and only those.
    let each = 3u64 << 19;
    let mut finished = Vec::new();
    for name in ["first", "second", "third"] {
        let id = writer_job(&env, name, each, None);
        assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");
        finished.push(id);
    }
    let (first, notices) = logs(&env, &finished[0]);
    assert!(first.is_empty(), "the oldest finished job's logs were deleted; notices:\n{notices}");
    assert_eq!(notice_bytes(&notices, "deleted after the job finished"), Some(each), "{notices}");
    for id in &finished[1..] {
        let (kept, notices) = logs(&env, id);
        assert_eq!(kept.len() as u64, each, "newer finished jobs keep their logs:\n{notices}");
        assert!(notices.is_empty(), "nothing was cut of them: {notices}");
    }

    // A job writing more than the whole quota: the other finished jobs' logs go first,
    // then its own new output is cut, and the cut is recorded.
    let big = 6u64 << 20;
    let id = writer_job(&env, "big", big, None);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");
    for id in &finished[1..] {
        let (kept, notices) = logs(&env, id);
        assert!(kept.is_empty(), "every finished job's logs went before new output was cut");
        assert_eq!(notice_bytes(&notices, "deleted after the job finished"), Some(each), "{notices}");
    }
    let (kept, notices) = logs(&env, &id);
    let refused = notice_bytes(&notices, "the server's log quota was full")
        .unwrap_or_else(|| panic!("the cut is shown with the logs:\n{notices}"));
    assert!(refused > 0 && kept.len() as u64 <= quota, "kept {} refused {refused}", kept.len());
    assert_eq!(kept.len() as u64 + refused, big, "kept and cut bytes add up to what was written");
    eprintln!("four jobs through a 4 MiB log quota in {:?}", started.elapsed());

    // The quota's use: /metrics and `rota server status`.
    let metrics = http_get(&env.url, "/metrics");
    let metric = |name: &str| -> Option<u64> {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
    };
    assert_eq!(metric("rota_log_quota_bytes"), Some(quota), "{metrics}");
    assert_eq!(metric("rota_log_live_bytes"), Some(kept.len() as u64), "{metrics}");
    assert_eq!(metric("rota_log_quota_pruned_bytes_total"), Some(3 * each), "{metrics}");
    assert_eq!(metric("rota_log_quota_refused_bytes_total"), Some(refused), "{metrics}");
    let o = run(&env, &["server", "status"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("of the 4.0 MiB log quota") && text.contains("4.5 MiB of finished jobs' logs deleted"),
        "server status shows the quota's use:\n{text}"
    );
    let o = run(&env, &["server", "status", "--json"]);
    let logs_use = &json(&o)["server"]["logs"];
    assert_eq!(logs_use["quotaBytes"], quota, "{logs_use:#}");
    assert_eq!(logs_use["refusedBytes"], refused, "{logs_use:#}");
}

/// A tmpfs of `size` mounted at `dir` in a mount namespace of its own, running `rota
/// server` with its database there. The mount is invisible outside; the test reaches it
/// through `/proc/<pid>/root`.
fn server_on_tmpfs(env: &mut Env, dir: &Path, size: &str) -> Proc {
    std::fs::create_dir_all(dir).expect("mount point");
    let db = dir.join("rota.db");
    let mut cmd = Command::new("unshare");
    isolate(&mut cmd, env);
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size={size} rota-test \"$0\" && exec \"$@\""))
        .arg(dir)
        .arg(rota_testkit::rota_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--database"])
        .arg(&db);
    let (proc, line) = Proc::spawn(cmd, "rota server listening on ");
    env.url = line.split_whitespace().last().expect("url").to_string();
    proc
}

/// Fills the filesystem holding `dir` until the kernel says ENOSPC; returns the file.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&block).and_then(|()| f.flush()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Byte-sized writes take the last partial block too.
    while f.write_all(&[0]).is_ok() {}
    path
}

/// Point 2, disk full: the server's database is on a 16 MiB tmpfs the test fills. A submit
/// is then a 507 naming the cause and the database, shown in full by the CLI; the server
/// logs it once, not once per request; freeing space makes submits work again.
#[test]
fn a_full_disk_is_a_507_naming_the_database_and_is_logged_once() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "mounting a tmpfs needs root");
    let mut env = Env::new();
    let dir = env.path("disk");
    let server = server_on_tmpfs(&mut env, &dir, "16m");
    let ok = submit(&env, &["--", "echo", "before"]);
    assert!(!ok.is_empty());
    // The server's view of the mount point: its own namespace, through /proc.
    let inside =
        Path::new("/proc").join(server.pid().to_string()).join("root").join(dir.strip_prefix("/").unwrap());
    assert!(inside.join("rota.db").exists(), "the database is on the tmpfs: {}", inside.display());
    assert!(!dir.join("rota.db").exists(), "the tmpfs is not visible outside the server's namespace");
    let filler = fill(&inside);

    let started = Instant::now();
    let db = dir.join("rota.db").display().to_string();
    let mut refused = Vec::new();
    // Space the WAL already holds may take a submit or two; then every one is refused.
    while refused.len() < 3 {
        let out = rota(&env).args(["job", "submit", "--", "echo", "full"]).output().expect("submit");
        if !out.status.success() {
            refused.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(started.elapsed() < bound(), "submits kept succeeding on a full disk");
    }
    eprintln!("three submits refused within {:?} of the disk filling up", started.elapsed());
    for e in &refused {
        assert!(
            e.contains("507") && e.contains("no space left") && e.contains(&db),
            "the CLI shows the 507, its cause and the database path in full: {e}"
        );
    }
    let log = server.output();
    let said = log.matches("no space left on the device holding the database").count();
    assert_eq!(said, 1, "the server logs a full disk once, not per request:\n{log}");

    std::fs::remove_file(&filler).expect("free the space");
    let again = rota(&env).args(["job", "submit", "--", "echo", "after"]).output().expect("submit");
    assert!(again.status.success(), "space freed, submits work: {}", String::from_utf8_lossy(&again.stderr));
    let deadline = Instant::now() + bound();
    while !server.output().contains("space available again") {
        assert!(Instant::now() < deadline, "the server says when writes work again:\n{}", server.output());
        std::thread::sleep(Duration::from_millis(100));
    }
}
