//! Acceptance of worker names and live sessions (issue 9, points 3 and 4), end to end with
//! real `rota` processes. Test hosts are network namespaces with host names of their own
//! (`rota_testkit::netns`), so a refusal names the other host and a "cut cable" can be pulled.
//! Every wait is bounded generously and prints what it observed; nothing asserts a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::background::{Cleanup, code, log, meta_path, run, stderr, wait_status};
use rota_testkit::netns::Host;
use rota_testkit::procs::kill;
use rota_testkit::{Env, HEARTBEAT, LEASE_TTL, Proc, bound, show_json, submit, wait_for_end, wait_for_state};
use std::time::{Duration, Instant};

/// The worker's persistent instance id, as its workspace keeps it.
fn instance_id(workspace: &std::path::Path) -> String {
    let path = workspace.join(".rota").join("instance-id");
    rota_testkit::wait_file(&path, bound())
}

/// The attempts of the job's first step: (worker, status) each.
fn attempts(env: &Env, job: &str) -> Vec<(String, String)> {
    show_json(env, job)["stepDetails"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["worker"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `rota worker ping --json`: (worker, host) of every reply.
fn ping(env: &Env) -> Vec<(String, String)> {
    let o = run(env, &["--json", "worker", "ping", "--timeout", "10s"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("ping --json ({e}): {}{}", rota_testkit::background::stdout(&o), stderr(&o))
    });
    v["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .map(|r| (r["worker"].as_str().unwrap().to_string(), r["host"].as_str().unwrap().to_string()))
        .collect()
}

/// The environment of a live process (tests may read it; the product never does).
fn environ(pid: i64) -> Vec<String> {
    i32::try_from(pid).ok().and_then(rota_worker::procfs::environ).unwrap_or_default()
}

/// A server in this test's tree listening on the host side of host `listen_on`'s link (0 or
/// 1), two test hosts pointed at it, and the join token.
fn two_hosts(a: &str, b: &str, listen_on: usize) -> (Env, Host, Host, String) {
    let mut server = Env::new();
    let mut hosts = [Host::new(a), Host::new(b)];
    let addr = hosts[listen_on].ns.host_addr.to_string();
    server.start_server_at(&addr, HEARTBEAT, LEASE_TTL, &["--allow-remote", "--insecure-http"]);
    for h in &mut hosts {
        h.env.url = server.url.clone();
    }
    let token = server.join_token();
    let [h1, h2] = hosts;
    (server, h1, h2, token)
}

/// Point 3: a second worker with a live name on another host and workspace exits 78
/// naming the holder, and the holder keeps its job to success. `--replace` takes the name;
/// the replaced worker exits 78 instead of registering again, and the name stays taken.
#[test]
fn a_live_name_is_refused_to_another_instance_and_replace_takes_it_once() {
    let began = Instant::now();
    let (server, h1, h2, token) = two_hosts("names-a", "names-b", 0);
    let join = ["--join-token", token.as_str()];

    let mut first = h1.spawn_worker("vm", &join);
    let holder = instance_id(&h1.workspace("vm"));
    let job = submit(&server, &["--on", "vm", "--step", "s=sleep 4; echo kept"]);
    wait_for_state(&server, &job, &["running"], bound());

    // Another instance (another host, another workspace) asks for the live name.
    let mut ws = vec!["worker", "run", "--name", "vm", "--workspace"];
    let second_ws = h2.workspace("vm");
    ws.push(second_ws.to_str().unwrap());
    ws.extend_from_slice(&join);
    let mut second = Proc::start(h2.rota(&ws));
    let t = Instant::now();
    let exit = second.wait_exit(bound());
    let said = second.output();
    eprintln!("the second worker exited {exit:?} after {:?}", t.elapsed());
    assert_eq!(
        exit,
        Some(78),
        "a name held by a live worker of another instance is bad configuration:\n{said}"
    );
    let want = format!(
        "worker name \"vm\" is held by a live worker on host {} (instance {holder}, last heartbeat ",
        h1.hostname
    );
    assert!(said.contains(&want), "expected {want:?} in:\n{said}");
    assert!(
        said.contains("s ago); stop it, pick another --name, or pass --replace to take the name over"),
        "{said}"
    );
    assert!(!said.contains("rota worker ready"), "the refused worker never registered:\n{said}");

    let done = wait_for_end(&server, &job);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(attempts(&server, &job), [("vm".to_string(), "succeeded".to_string())], "one attempt, kept");
    assert!(first.child.try_wait().unwrap().is_none(), "the holder still runs:\n{}", first.output());

    // --replace takes it on purpose.
    let mut replace = join.to_vec();
    replace.push("--replace");
    let second = h2.spawn_worker("vm", &replace);
    let t = Instant::now();
    let exit = first.wait_exit(bound());
    let said = first.output();
    eprintln!("the replaced worker exited {exit:?} after {:?}", t.elapsed());
    assert_eq!(exit, Some(78), "the replaced worker stops for good:\n{said}");
    assert!(
        said.contains(
            "worker name \"vm\" was taken over by another instance while this worker ran; not taking it back"
        ) && said.contains(&format!("on host {}", h2.hostname)),
        "{said}"
    );
    assert_eq!(
        said.matches("rota_worker::lifecycle: registered").count(),
        1,
        "the replaced worker must not register again:\n{said}"
    );
    // The name stays with the replacement (no tug of war): it answers, now and later.
    for _ in 0..2 {
        assert_eq!(ping(&server), [("vm".to_string(), h2.hostname.clone())]);
        std::thread::sleep(LEASE_TTL);
    }
    let job = submit(&server, &["--on", "vm", "--step", "s=echo replaced"]);
    assert_eq!(wait_for_end(&server, &job)["state"], "succeeded");
    drop(second);
    eprintln!("took {:?}", began.elapsed());
}

/// Point 3: a background worker started with `--replace` takes the name once (the setting
/// is never saved), and after a kill -9 its supervisor's restart, well within the lease
/// TTL, registers again as the same instance, without a refusal.
#[test]
fn a_background_worker_restarted_within_the_ttl_is_the_same_instance() {
    // A long TTL: the restart certainly comes back while the old session is live.
    let ttl = Duration::from_secs(30);
    let mut env = Env::new();
    env.start_server_at("127.0.0.1", HEARTBEAT, ttl, &[]);
    let _cleanup = Cleanup::new(&env);
    let mut other = Env::new();
    other.url = env.url.clone();
    let token = env.join_token();
    let mut holder = rota_testkit::spawn_worker(&other, "vm", &["--join-token", &token]);

    // Refused while the other instance is live (readiness reports the refusal at once).
    let o = run(&env, &["worker", "start", "--name", "vm", "--restart-delay", "200ms"]);
    assert_ne!(code(&o), 0, "a start must not take a live name:\n{}", stderr(&o));
    assert!(stderr(&o).contains("worker name \"vm\" is held by a live worker on host"), "{}", stderr(&o));
    assert!(holder.child.try_wait().unwrap().is_none(), "the holder is untouched");

    let o =
        run(&env, &["worker", "start", "--json", "--name", "vm", "--restart-delay", "200ms", "--replace"]);
    assert_eq!(code(&o), 0, "start --replace: {}\nlog:\n{}", stderr(&o), log(&env));
    let exit = holder.wait_exit(bound());
    assert_eq!(exit, Some(78), "{}", holder.output());
    let saved = std::fs::read_to_string(meta_path(&env)).expect("saved settings");
    assert!(!saved.contains("replace"), "--replace must never be saved: {saved}");
    let s = wait_status(&env, bound(), "running", |c, s| c == 0 && s["worker"]["pid"].is_i64());
    let pid = s["worker"]["pid"].as_i64().unwrap();
    assert!(environ(pid).iter().any(|v| v == "ROTA_WORKER_REPLACE_ONCE=1"), "the first run replaces");

    // kill -9 the worker (not the supervisor): it comes back as the same instance.
    let log_from = log(&env).len();
    kill("KILL", i32::try_from(pid).unwrap());
    let killed = Instant::now();
    let s = wait_status(&env, bound(), "running again with a new worker", |c, s| {
        c == 0 && s["worker"]["pid"].as_i64().is_some_and(|p| p != pid)
    });
    let back = killed.elapsed();
    let new_pid = s["worker"]["pid"].as_i64().unwrap();
    eprintln!("re-registered {back:?} after the kill (lease TTL {ttl:?})");
    assert!(s["restarts"].as_u64() >= Some(1), "{s:#}");
    assert!(
        !environ(new_pid).iter().any(|v| v.starts_with("ROTA_WORKER_REPLACE_ONCE")),
        "a restart never replaces"
    );
    let text = log(&env).split_off(log_from);
    assert!(text.contains("rota_worker::lifecycle: registered"), "{text}");
    assert!(!text.contains("is held by a live worker"), "the restart was refused:\n{text}");
    assert!(!text.contains("exited with code 78"), "{text}");
    assert_eq!(ping(&env).iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(), ["vm"]);
    let job = submit(&env, &["--on", "vm", "--step", "s=echo back"]);
    assert_eq!(wait_for_end(&env, &job)["state"], "succeeded");
}

/// Point 4: a worker whose link is cut (no FIN: its parked claim still looks open) is never
/// handed the retry of its lost attempt; the other worker runs it first time.
#[test]
fn a_retry_is_never_handed_to_a_worker_whose_link_is_cut() {
    let began = Instant::now();
    // The server listens on the live host's link, so it stays reachable from here.
    let (server, cut, live, token) = two_hosts("cut", "live", 1);
    let join = ["--join-token", token.as_str(), "--concurrency", "2"];

    // The first attempt runs on the worker whose link will be cut; it keeps a claim parked
    // on the server for its free slot. Any later attempt finishes at once.
    let mut w1 = cut.spawn_worker("w1", &join);
    let marks = server.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let run = format!(
        "hostname > {m}/attempt-$ROTA_ATTEMPT; [ \"$ROTA_ATTEMPT\" = 1 ] && exec sleep 300; echo done",
        m = marks.display()
    );
    let job = submit(&server, &["--step", &format!("s={run}")]);
    assert_eq!(rota_testkit::wait_file(&marks.join("attempt-1"), bound()), cut.hostname);
    // Let its claim for the free slot park on the server.
    std::thread::sleep(HEARTBEAT * 2);
    cut.ns.cut();
    let t = Instant::now();

    // The server notices no heartbeat and expires the lease: attempt 1 is lost.
    let start = Instant::now();
    while attempts(&server, &job).first().is_none_or(|(_, s)| s != "lost") {
        assert!(start.elapsed() < bound(), "attempt 1 was never lost: {:?}", attempts(&server, &job));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("attempt 1 lost {:?} after the cut", t.elapsed());
    // Give a claim still parked for the silent worker every chance to take the retry.
    std::thread::sleep(LEASE_TTL);
    let seen = attempts(&server, &job);
    assert_eq!(seen.len(), 1, "the retry went to the unreachable worker: {seen:?}");

    let w2 = live.spawn_worker("w2", &join);
    let done = wait_for_end(&server, &job);
    eprintln!("the job ended {} {:?} after the cut", done["state"], t.elapsed());
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let seen = attempts(&server, &job);
    assert_eq!(
        seen,
        [("w1".to_string(), "lost".to_string()), ("w2".to_string(), "succeeded".to_string())],
        "the retry runs on the other worker first time"
    );
    assert_eq!(rota_testkit::wait_file(&marks.join("attempt-2"), bound()), live.hostname);
    // The cut worker cannot drain or unregister; stop it now.
    let _ = w1.child.kill();
    let _ = w1.child.wait();
    drop(w2);
    eprintln!("took {:?}", began.elapsed());
}
