//! Several workers on one host (issue 9, point 5), with real processes: the default
//! workspace is per worker name, so `--name` alone is enough; names that cannot be a
//! directory are refused; the shared workspace of earlier releases has its journal of
//! running steps reaped once and retired; a workspace shared on purpose is refused once,
//! as bad configuration (exit 78), never as a crash loop.

use rota_testkit::background::*;
use rota_testkit::procs::{group_members, wait_group_gone};
use rota_testkit::{Env, Proc, bound, spawn_server, wait_until};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// `rota worker run --name NAME ARGS` (no `--workspace`), once it registered.
fn worker(env: &Env, name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(rota_testkit::rota_bin());
    rota_testkit::isolate(&mut cmd, env);
    cmd.args(["worker", "run", "--name", name]).args(args);
    Proc::spawn(cmd, "rota worker ready").0
}

/// The workspace root, where earlier releases ran every worker.
fn root(env: &Env) -> std::path::PathBuf {
    env.data_dir().join("workspace")
}

#[test]
fn three_named_workers_register_side_by_side_with_default_workspaces() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let began = Instant::now();
    let workers: Vec<Proc> = ["w1", "w2", "w3"].iter().map(|n| worker(&env, n, &[])).collect();
    eprintln!("three workers registered after {:?}", began.elapsed());
    for name in ["w1", "w2", "w3"] {
        assert!(root(&env).join(name).join(".rota").is_dir(), "no workspace of its own for {name}");
    }
    let o = run(&env, &["--json", "worker", "ping", "--timeout", "10s"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let v = json(&o);
    let mut answered: Vec<&str> =
        v["replies"].as_array().expect("replies").iter().filter_map(|r| r["worker"].as_str()).collect();
    answered.sort_unstable();
    assert_eq!(answered, ["w1", "w2", "w3"], "{v:#}");
    for w in &workers {
        assert!(!w.output().contains("in use by another worker"), "{}", w.output());
    }

    // A name is made a safe directory name; names that cannot be one are refused.
    let odd = worker(&env, "a/../b", &[]);
    assert!(root(&env).join("a%2F..%2Fb").is_dir(), "{}", odd.output());
    let o = run(&env, &["worker", "run", "--name", "attempts"]);
    assert_eq!(code(&o), 78, "a foreground worker refuses bad flags with 78: {}", stderr(&o));
    assert!(stderr(&o).contains("'attempts' cannot name a default workspace"), "{}", stderr(&o));
    let o = run(&env, &["worker", "start", "--name", ".rota"]);
    assert_eq!(code(&o), 2, "start refuses it as a usage error, before spawning: {}", stderr(&o));
    assert!(stderr(&o).contains("give --workspace DIR"), "{}", stderr(&o));
    assert!(rota_procs(&env).is_empty(), "nothing may be left of a refused start");
    let o = run(&env, &["worker", "start", "--name", ".rota", "--workspace", &path_str(&env.path("own"))]);
    assert_eq!(code(&o), 0, "any name works with its own --workspace: {}", stderr(&o));
    assert_eq!(code(&run(&env, &["worker", "stop"])), 0);
}

/// `sh -c 'sleep 300 & sleep 300'` in its own process group, as a step of an earlier
/// release ran; returns (pid = pgid, start ticks).
fn old_step() -> (std::process::Child, i32, u64) {
    let child = Command::new("sh")
        .args(["-c", "sleep 300 & sleep 300"])
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("sh");
    let pid = child.id() as i32;
    let ticks = rota_worker::procfs::read_stat(pid).expect("stat").start_ticks;
    wait_until(bound(), "both processes of the old step", || group_members(pid).len() >= 2);
    (child, pid, ticks)
}

/// The previous release's journal in its shared workspace, byte for byte as it wrote it:
/// one started step still running, one that ended.
fn write_old_journal(ws: &Path, pid: i32, ticks: u64) {
    std::fs::create_dir_all(ws.join(".rota/pool/1")).expect("mkdir");
    std::fs::create_dir_all(ws.join("attempts/41")).expect("mkdir");
    let body = format!(
        "+{{\"attemptId\":41,\"pid\":{pid},\"pgid\":{pid},\"startTicks\":{ticks}}}\n\
         +{{\"attemptId\":40,\"pid\":1,\"pgid\":1,\"startTicks\":1}}\n-40\n"
    );
    std::fs::write(ws.join(".rota/running.log"), body).expect("journal");
}

#[test]
fn the_old_shared_journal_is_reaped_once_and_retired() {
    let env = spawn_server();
    let (mut child, pgid, ticks) = old_step();
    write_old_journal(&root(&env), pgid, ticks);

    // Two workers start together: one of them reaps the old journal, under its lock.
    let began = Instant::now();
    let (w1, w2) = std::thread::scope(|s| {
        let a = s.spawn(|| worker(&env, "w1", &[]));
        let b = s.spawn(|| worker(&env, "w2", &[]));
        (a.join().expect("w1"), b.join().expect("w2"))
    });
    wait_group_gone(pgid, bound());
    let _ = child.wait();
    eprintln!("the old step's group was gone {:?} after the workers started", began.elapsed());
    let retired = |p: &Proc| p.output().matches("retired the shared workspace of an earlier release").count();
    assert_eq!(retired(&w1) + retired(&w2), 1, "w1:\n{}\nw2:\n{}", w1.output(), w2.output());
    let ws = root(&env);
    assert!(!ws.join(".rota/running.log").exists(), "the old journal must be retired");
    assert!(!ws.join(".rota/pool").exists());
    assert!(ws.join("attempts/41").is_dir(), "kept attempt directories are left alone");

    // Retired once: a later start finds nothing to do and says nothing.
    let w3 = worker(&env, "w3", &[]);
    assert_eq!(retired(&w3), 0, "{}", w3.output());
    let o = run(&env, &["--json", "worker", "ping", "--timeout", "10s"]);
    assert_eq!(json(&o)["replies"].as_array().map(Vec::len), Some(3), "{}", stdout(&o));
}

#[test]
fn a_workspace_shared_on_purpose_is_refused_once_as_bad_configuration() {
    let env = spawn_server();
    let _cleanup = Cleanup::new(&env);
    let shared = path_str(&env.path("shared"));
    let _w1 = worker(&env, "w1", &["--workspace", &shared]);

    let o = run(&env, &["worker", "run", "--name", "w2", "--workspace", &shared]);
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("in use by another worker").count(), 1, "said more than once: {err}");
    assert!(err.contains(&shared), "{err}");

    // In the background: refused at once, `failed` as bad configuration, no restarts and
    // no process left.
    let began = Instant::now();
    let o = run(&env, &["worker", "start", "--name", "w3", "--workspace", &shared]);
    assert_ne!(code(&o), 0);
    let err = stderr(&o);
    assert!(err.contains("refused at once") && err.contains("in use by another worker"), "{err}");
    // It quotes the log's last lines too, but no line says it twice.
    for line in err.lines() {
        assert!(line.matches("in use by another worker").count() <= 1, "said twice: {line}");
    }
    wait_until(bound(), "no rota process of the profile", || rota_procs(&env).is_empty());
    eprintln!("the failed start's processes were gone after {:?}", began.elapsed());
    let (c, s) = status(&env, &[]);
    assert_eq!((c, s["state"].as_str(), s["restarts"].as_u64()), (3, Some("failed"), Some(0)), "{s:#}");
    assert_eq!(s["lastExit"]["code"], 78, "{s:#}");
    assert!(!log(&env).contains("restarting after a delay"), "restarted:\n{}", log(&env));
}
