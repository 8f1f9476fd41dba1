//! Issue 12, acceptance 5: a net split. Two servers on one PostgreSQL database and two
//! worker hosts, each a network namespace with its own host name and HOME/XDG tree
//! (`rota_testkit::netns::Host`), each worker given both servers. Cut one worker host's
//! link during a step: its attempt is lost after the TTL and succeeds on the other host;
//! the cut-off worker kills its own step; once the link is back its late completion gets
//! 409 and the job is recorded once.
//!
//! Where the servers run: in this (root) namespace, each in a HOME/XDG tree of its own,
//! listening on the host end of one worker host's link. PostgreSQL here listens on
//! 127.0.0.1 only and this machine does not forward between namespaces (`ip_forward` is 0,
//! and a test must not change it), so servers inside namespaces could reach neither the
//! database nor each other's workers without a forwarder of ours in the path. An address
//! on a link's host end stays this namespace's own when that link is cut, so both servers
//! stay reachable from the host whose link is up, and neither from the one cut off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::netns::Host;
use rota_testkit::records::Records;
use rota_testkit::several::start_in_own_tree;
use rota_testkit::{Backend, Env, HEARTBEAT, LEASE_TTL, bound, pid_alive, show_json, submit, wait_for_end};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the step sleeps between its two markers.
const STEP_SECS: u64 = 15;

/// `(worker, status)` of each attempt of the job's only step, through the CLI.
fn attempts(env: &Env, job: &str) -> Vec<(String, String)> {
    show_json(env, job)["stepDetails"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| (a["worker"].as_str().unwrap().to_string(), a["status"].as_str().unwrap().to_string()))
        .collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_worker_loses_its_attempt_kills_its_step_and_its_late_result_gets_409() {
    if !Backend::Postgres.available() {
        return;
    }
    let began = Instant::now();
    let (mut h1, mut h2) = (Host::new("split-1"), Host::new("split-2"));
    let mut env = Env::on(Backend::Postgres);
    let addr1 = h1.ns.host_addr.to_string();
    env.start_server_at(&addr1, HEARTBEAT, LEASE_TTL, &["--allow-remote", "--insecure-http"]);
    let a = env.url.clone();
    let b_root = tempfile::tempdir().unwrap();
    let b = start_in_own_tree(
        &env,
        b_root.path(),
        &format!("{}:0", h2.ns.host_addr),
        &["--allow-remote", "--insecure-http"],
    );
    eprintln!("server A {a}, server B {}", b.url);
    let both = format!("{a},{}", b.url);
    for h in [&mut h1, &mut h2] {
        h.env.url = both.clone();
    }
    env.url = both;
    let records = Records::connect(env.database_url().unwrap()).await;
    let token = env.join_token();
    let join = ["--join-token", token.as_str()];

    // The step starts on host 1 (the only worker yet), then host 2's worker joins.
    let mut w1 = h1.spawn_worker("w1", &join);
    let marks = env.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let run = format!(
        "m={m}/a$ROTA_ATTEMPT; echo $$ > $m.pid; hostname > $m.start; sleep {STEP_SECS}; hostname > $m.done",
        m = marks.display()
    );
    let job = submit(&env, &["--step", &format!("s={run}")]);
    assert_eq!(rota_testkit::wait_file(&marks.join("a1.start"), bound()), h1.hostname);
    let step_pid: i32 = rota_testkit::wait_file(&marks.join("a1.pid"), bound()).parse().unwrap();
    let w2 = h2.spawn_worker("w2", &join);

    h1.ns.cut();
    let cut = Instant::now();
    eprintln!("cut host 1's link during the step (pid {step_pid})");

    // The servers hear nothing from host 1: the attempt is lost after the TTL.
    while attempts(&env, &job).first().is_none_or(|(_, s)| s != "lost") {
        assert!(cut.elapsed() < bound(), "attempt 1 was never lost: {:?}", attempts(&env, &job));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("attempt 1 lost {:?} after the cut", cut.elapsed());

    // Host 1's worker fences itself: its step's process is gone well before it would end.
    let t = Instant::now();
    while pid_alive(step_pid) {
        assert!(t.elapsed() < bound(), "host 1's worker never killed its step\n{}", w1.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("host 1's step was gone {:?} after the cut", cut.elapsed());
    assert!(w1.output().contains("self-fencing attempt"), "killed by its own worker:\n{}", w1.output());

    let end = wait_for_end(&env, &job);
    assert_eq!(end["state"], "succeeded", "{end:#}");
    eprintln!("the job succeeded on host 2 {:?} after the cut", cut.elapsed());
    assert_eq!(read(&marks.join("a2.done")).as_deref(), Some(h2.hostname.as_str()));
    assert_eq!(read(&marks.join("a1.done")), None, "host 1's step ran to its end");

    // The link returns: host 1's worker delivers its late result and is told 409.
    h1.ns.restore();
    let back = Instant::now();
    let superseded = "superseded: result not recorded (409)";
    while !w1.output().contains(superseded) {
        assert!(
            back.elapsed() < bound(),
            "host 1's late result was never refused with 409:\n{}",
            w1.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("host 1's late result got 409 {:?} after the link returned", back.elapsed());

    // Recorded once: one lost attempt on host 1, one success on host 2, nothing else.
    let want = [("w1".to_string(), "lost".to_string()), ("w2".to_string(), "succeeded".to_string())];
    assert_eq!(attempts(&env, &job), want);
    let stored: Vec<(String, String)> =
        records.attempts_of(&job).await.into_iter().map(|a| (a.worker, a.status)).collect();
    assert_eq!(stored, want, "the database's records of job {job}");
    assert_eq!(read(&marks.join("a1.done")), None, "host 1's step never completed");
    assert!(!marks.join("a3.start").exists(), "a third attempt ran");

    w1.kill();
    drop(w2);
    drop(b);
    eprintln!("took {:?}", began.elapsed());
}
