//! The step spawner: every step of a worker is spawned by one of a few small
//! single-threaded helper processes, re-executed from the rota binary before the async
//! runtime starts. Each sits in its own process group (a kill of the worker's group cannot
//! take it first), is a child subreaper (a step's orphans stay under it), dies with its
//! worker and then KILLs every group it spawned, and journals each group (in its own
//! journal) before it answers. So a SIGKILLed worker, foreground or background, leaves no
//! step behind.
//!
//! - `wire.rs`: the datagrams. `helper.rs`: the helper's loop. `client.rs`: [`Spawner`],
//!   the worker's handle.
//!
//! Binaries that run a worker call [`helper_main`] when their first argument is
//! [`HELPER_ARG`], before anything else, and [`Spawner::start`] before their runtime.

mod client;
mod helper;
mod wire;

pub(crate) use client::{SpawnedStep, StepExit};
pub use client::{Spawner, SpawnerError};

use std::os::fd::{AsFd, OwnedFd};

/// The first argument that turns the rota binary into a spawner helper.
pub const HELPER_ARG: &str = "__spawner";

/// Environment variable that turns a test binary into a spawner helper (see
/// [`serve_if_test_helper`]).
#[doc(hidden)]
pub const TEST_HELPER_ENV: &str = "ROTA_SPAWNER_TEST_HELPER";

/// The helper's main: serves the worker connected on stdin until it goes away, kills what
/// is left, and returns the process's exit code.
pub fn helper_main() -> i32 {
    // `--run-as`: become the steps' user first, while this process has one thread.
    if let Err(e) = crate::run_as::drop_privileges_from_env() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("rota spawner: cannot change to the --run-as user: {e}\n").as_bytes(),
        );
        return 1;
    }
    // Re-executed (and perhaps changed user), so its dumpability is reset: it holds no
    // token, but a step of the same user must not attach to what spawns and kills steps.
    crate::dumpable::forbid_dumps();
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(sock) => {
            // Our stdin must not stay a second handle on the socket (EOF would never come
            // from our side closing it); the step gets /dev/null anyway.
            helper::serve(without_stdin(sock))
        }
        Err(_) => 1,
    }
}

fn without_stdin(sock: OwnedFd) -> OwnedFd {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(null);
    }
    sock
}

/// For tests of crates that run a worker in-process: a test binary cannot re-execute a
/// `rota` binary, so it re-executes itself running one test, named `test_name`, whose
/// body is `serve_if_test_helper()`.
#[doc(hidden)]
pub fn start_in_test_binary(test_name: &str) -> Result<Spawner, SpawnerError> {
    let words = [test_name, "--exact", "--nocapture", "--test-threads=1", "-q"];
    let args: Vec<&std::ffi::OsStr> = words.iter().map(|s| s.as_ref()).collect();
    Spawner::start(&args, &[(TEST_HELPER_ENV, "1".as_ref())])
}

/// The body of the helper test named in [`start_in_test_binary`]: when this process was
/// started as a helper it serves and exits; otherwise it returns at once.
#[doc(hidden)]
pub fn serve_if_test_helper() {
    if std::env::var_os(TEST_HELPER_ENV).is_some() {
        std::process::exit(helper_main());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::procfs::{all_processes, live_group_members};
    use rota_domain::AttemptId;
    use std::time::{Duration, Instant};

    #[test]
    fn helper() {
        serve_if_test_helper();
    }

    const BOUND: Duration = Duration::from_secs(30);

    fn start() -> Spawner {
        start_in_test_binary("spawner::tests::helper").unwrap()
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < BOUND, "{what} within {BOUND:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    fn run(script: &str) -> Vec<std::ffi::OsString> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn the_helper_ignores_term_and_int_and_kills_every_group_when_its_worker_goes() {
        let spawner = start();
        let helpers: Vec<i32> = spawner.helper_pids().iter().map(|p| i32::try_from(*p).unwrap()).collect();
        assert!(helpers.len() >= 2, "{helpers:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut groups = Vec::new();
        for i in 0..4 {
            let sp = spawner
                .spawn(
                    AttemptId(i),
                    crate::spawn::SHELL,
                    run("sleep 300 & (sleep 300 & wait) & wait"),
                    vec![],
                    dir.path(),
                )
                .await
                .unwrap();
            groups.push(sp.pid);
            std::mem::forget(sp.exit); // as if the executor had vanished with its worker
        }
        wait_until("every group to have its processes", || {
            groups.iter().all(|g| live_group_members(*g).len() >= 3)
        })
        .await;
        // Spawns are spread over the helpers: each is the parent of some steps.
        let procs = all_processes().unwrap();
        for helper in &helpers {
            assert!(
                groups.iter().any(|g| procs.iter().any(|p| p.pid == *g && p.ppid == *helper)),
                "helper {helper} spawned none of {groups:?}"
            );
        }
        // Each helper has its own group and shrugs off what a terminal or supervisor sends.
        for helper in &helpers {
            assert_eq!(crate::procfs::read_stat(*helper).unwrap().pgid, *helper);
            for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
                rustix::process::kill_process(rustix::process::Pid::from_raw(*helper).unwrap(), sig).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let procs = all_processes().unwrap();
        assert!(
            helpers.iter().all(|h| procs.iter().any(|p| p.pid == *h && !p.is_zombie())),
            "a helper died of TERM/INT"
        );
        assert!(groups.iter().all(|g| !live_group_members(*g).is_empty()));
        drop(spawner);
        let took = wait_until("every step process to be gone", || {
            let procs = all_processes().unwrap();
            !procs.iter().any(|p| !p.is_zombie() && (groups.contains(&p.pgid) || helpers.contains(&p.pid)))
        })
        .await;
        eprintln!(
            "{} helpers and their 4 groups gone {took:?} after the worker's socket closed",
            helpers.len()
        );
    }

    #[tokio::test]
    async fn exits_output_and_failures_reach_the_worker() {
        let spawner = start();
        let dir = tempfile::tempdir().unwrap();
        let mut sp = spawner
            .spawn(
                AttemptId(1),
                crate::spawn::SHELL,
                run("printf out; printf err >&2; exit 7"),
                vec![],
                dir.path(),
            )
            .await
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        use tokio::io::AsyncReadExt;
        sp.stdout.read_to_end(&mut out).await.unwrap();
        sp.stderr.read_to_end(&mut err).await.unwrap();
        assert_eq!((out.as_slice(), err.as_slice()), (&b"out"[..], &b"err"[..]));
        assert_eq!(sp.exit.wait().await.unwrap().code(), Some(7));
        assert_eq!(sp.exit.wait().await.unwrap().code(), Some(7), "repeatable");
        let missing = dir.path().join("missing");
        let e = spawner
            .spawn(AttemptId(2), crate::spawn::SHELL, run("true"), vec![], &missing)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
        // A request larger than any socket buffer is refused with a clear error, and the
        // helper goes on serving.
        let huge = "x".repeat(32 << 20);
        let e = spawner
            .spawn(AttemptId(3), crate::spawn::SHELL, run(&huge), vec![], dir.path())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        let mut sp = spawner
            .spawn(AttemptId(4), crate::spawn::SHELL, run("exit 0"), vec![], dir.path())
            .await
            .unwrap();
        assert!(sp.exit.wait().await.unwrap().success());
    }
}
