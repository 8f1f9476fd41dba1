//! Steps cannot read the platform's secrets: rota's processes of a user are non-dumpable,
//! so a step of that user cannot read their `/proc/<pid>/environ` (and the background
//! commands still work on them); `--run-as` runs steps as another user; token, database and
//! key files are 0600, and wider ones are tightened at start.
#![allow(clippy::unwrap_used)]

use rota_testkit::background::{self, Cleanup, code, stderr, stdout};
use rota_testkit::require::require;
use rota_testkit::server::{self, Server};
use rota_testkit::{Env, HEARTBEAT, LEASE_TTL, isolate, rota, rota_bin, submit, wait_for_end};
use rota_worker::procfs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The non-root user `.ci/run` creates.
const TEST_USER: &str = "rota-test";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn has_user(name: &str) -> bool {
    Command::new("id").arg(name).output().is_ok_and(|o| o.status.success())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// A script in the tree that runs the rota binary as `user` (same pid: `exec` all the way).
fn as_user_wrapper(env: &Env, user: &str) -> PathBuf {
    let path = env.path("as-user");
    let script = format!(
        "#!/bin/sh\nexec setpriv --reuid {user} --regid {user} --init-groups -- {} \"$@\"\n",
        rota_bin().display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `rota ARGS` as the test user, in the tree.
fn run_as_user(env: &Env, wrapper: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(wrapper);
    isolate(&mut cmd, env);
    cmd.args(args).output().unwrap()
}

/// The step's output of job `id` (run as root: the admin token file is the test user's).
fn logs(env: &Env, id: &str) -> String {
    let out = rota(env).args(["job", "logs", id]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads each pid's environment from a step and prints one line per pid: the error, or
/// `readable`; then whether the step can read its own environment.
fn probe_script(pids: &[(&str, i32)]) -> String {
    let mut s = String::new();
    for (what, pid) in pids {
        s.push_str(&format!(
            "if cat /proc/{pid}/environ >/dev/null 2>/tmp/.rota-probe-$$; then echo '{what}: readable'; \
             else echo \"{what}: $(cat /tmp/.rota-probe-$$)\"; fi; "
        ));
    }
    s.push_str(
        "rm -f /tmp/.rota-probe-$$; if tr '\\0' '\\n' </proc/$$/environ | grep -q '^ROTA_STEP='; then \
         echo 'self: readable'; else echo \"self: $(cat /proc/$$/environ 2>&1 | head -c 200)\"; fi",
    );
    s
}

#[test]
fn a_step_cannot_read_the_environment_of_its_worker_spawner_supervisor_or_server() {
    if !require(is_root(), "root", "run the tests as root (they switch to a non-root user with setpriv)")
        || !require(
            has_user(TEST_USER),
            "the user rota-test",
            "useradd --create-home --shell /bin/sh rota-test",
        )
        || !require(
            Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()),
            "setpriv",
            "apt-get install util-linux",
        )
    {
        return;
    }
    let mut env = Env::new();
    let _cleanup = Cleanup::new(&env);
    // The tree belongs to the test user, who runs the server and the worker.
    let root = env.dir.path().to_path_buf();
    let chown = Command::new("chown").args(["-R", &format!("{TEST_USER}:{TEST_USER}")]).arg(&root).status();
    assert!(chown.unwrap().success());
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = as_user_wrapper(&env, TEST_USER);
    let spec =
        server::Spec { bin: wrapper.clone(), ..env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &[]) };
    let server: Server = server::start(spec).unwrap_or_else(|e| panic!("{e}"));
    env.url = server.url.clone();

    let started = Instant::now();
    let o = run_as_user(&env, &wrapper, &["worker", "start", "--json"]);
    assert_eq!(code(&o), 0, "worker start: {}\nlog:\n{}", stderr(&o), background::log(&env));
    eprintln!("background worker of {TEST_USER} registered after {:?}", started.elapsed());
    let procs = background::rota_procs(&env);
    let supervisor = procs.iter().find(|p| p.is_supervisor()).expect("a supervisor").pid;
    let worker = procs.iter().find(|p| p.is_worker()).expect("a worker").pid;
    let spawner = procfs::children_of(worker)
        .into_iter()
        .find(|p| procfs::cmdline(p.pid).is_some_and(|a| a.iter().any(|w| w == "__spawner")))
        .expect("a spawner helper")
        .pid;
    let server_pid = server.proc.pid();
    for pid in [supervisor, worker, spawner, server_pid] {
        assert_eq!(procfs::uid(pid), Some(uid_of(TEST_USER)), "pid {pid} runs as {TEST_USER}");
    }

    let pids = [("worker", worker), ("spawner", spawner), ("supervisor", supervisor), ("server", server_pid)];
    let id = submit(&env, &["--", "sh", "-c", &probe_script(&pids)]);
    let job = wait_for_end(&env, &id);
    let out = logs(&env, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}\n{out}");
    for (what, _) in pids {
        let line =
            out.lines().find(|l| l.starts_with(&format!("{what}:"))).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("Permission denied"), "a step read the {what}'s environment: {line}\n{out}");
    }
    assert!(out.contains("self: readable"), "a step can read its own environment:\n{out}");
    eprintln!("step output:\n{out}");

    // The background commands still work on these non-dumpable processes of the user.
    let o = run_as_user(&env, &wrapper, &["worker", "healthcheck"]);
    assert_eq!(code(&o), 0, "healthcheck: {}{}", stdout(&o), stderr(&o));
    let o = run_as_user(&env, &wrapper, &["worker", "diagnose"]);
    eprintln!("diagnose (exit {}):\n{}{}", code(&o), stdout(&o), stderr(&o));
    assert_eq!(code(&o), 0, "diagnose: {}{}", stdout(&o), stderr(&o));
    let began = Instant::now();
    let o = run_as_user(&env, &wrapper, &["worker", "stop"]);
    assert_eq!(code(&o), 0, "stop: {}{}", stdout(&o), stderr(&o));
    for pid in [supervisor, worker, spawner] {
        assert!(procfs::stat(pid).is_none_or(|p| p.is_zombie()), "pid {pid} outlived `worker stop`");
    }
    eprintln!("worker stop took {:?}", began.elapsed());
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn run_as_nobody_runs_steps_as_nobody_who_cannot_read_a_private_directory() {
    if !require(is_root(), "root", "run the tests as root (`--run-as` needs a root worker)")
        || !require(has_user("nobody"), "the user nobody", "a standard /etc/passwd")
    {
        return;
    }
    let mut env = Env::new();
    env.start_server(&[]);
    // A tree of mode 0700: nobody cannot reach a workspace in it.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = Command::new(rota_bin());
    isolate(&mut cmd, &env);
    let ws = env.path("ws");
    let o = cmd.args(["worker", "run", "--run-as", "nobody", "--workspace"]).arg(&ws).output().unwrap();
    eprintln!("refused: {}", stderr(&o).trim());
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reach the workspace"), "{}", stderr(&o));
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A WorkerConfig's setup runs as nobody too, and its files are nobody's: a setup that
    // finds otherwise fails, and the worker then claims nothing.
    let nobody = uid_of("nobody");
    let config = env.path("config.yaml");
    let setup = format!("test $(id -u) = {nobody} && test $HOME = /nonexistent && test -O bin/hello");
    std::fs::write(
        &config,
        format!(
            "kind: WorkerConfig\nmetadata: {{name: tools}}\nspec:\n  selector: {{workers: ['*']}}\n  files:\n    - {{path: bin/hello, mode: '0755', content: \"#!/bin/sh\\necho hello\\n\"}}\n  setup: {{run: '{setup}', timeout: 30s}}\n"
        ),
    )
    .unwrap();
    let o = background::run(&env, &["apply", "-f", &config.display().to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let _worker = rota_testkit::spawn_worker(&env, "w", &["--run-as", "nobody"]);
    eprintln!("worker running as nobody");

    // Under /tmp: a 0700 directory of root's and a world-readable sibling.
    let private = tempfile::Builder::new().prefix("rota-private-").tempdir_in("/tmp").unwrap();
    let open = tempfile::Builder::new().prefix("rota-open-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(private.path().join("f"), "private\n").unwrap();
    std::fs::write(open.path().join("f"), "open content\n").unwrap();
    std::fs::set_permissions(open.path().join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!(
        "echo uid=$(id -u) home=$HOME user=$USER; cat {p}/f 2>&1; cat {o}/f; \
         echo config-file-owner=$(stat -c %u $ROTA_CONFIG_DIR/bin/hello)",
        p = private.path().display(),
        o = open.path().display()
    );
    let id = submit(&env, &["--", "sh", "-c", &script]);
    let job = wait_for_end(&env, &id);
    let out = logs(&env, &id);
    eprintln!("step output:\n{out}");
    assert_eq!(job["state"], "succeeded", "{job:#}\n{out}");
    assert!(out.contains(&format!("uid={nobody} ")), "{out}");
    assert!(out.contains(&format!("config-file-owner={nobody}")), "{out}");
    assert!(out.contains("user=nobody"), "{out}");
    assert!(out.contains("Permission denied") && !out.contains("private\n"), "{out}");
    assert!(out.contains("open content"), "{out}");
}

#[test]
fn database_token_and_key_files_are_0600_and_wider_ones_are_tightened() {
    let mut env = Env::new();
    let data = env.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    // An empty file is an empty SQLite database: the server starts on it.
    let db = data.join("rota.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.start_server(&[]);
    let log = env.server_log();
    assert!(log.contains(&format!("{} was mode 0644", db.display())), "no notice:\n{log}");
    // A step's writes make the WAL files real.
    let _worker = rota_testkit::spawn_worker(&env, "w", &[]);
    let id = submit(&env, &["--", "echo", "hi"]);
    assert_eq!(wait_for_end(&env, &id)["state"], "succeeded");
    let files = [
        "admin.token",
        "join.token",
        "secret.key",
        "rota.db",
        "rota.db-wal",
        "rota.db-shm",
        "rota.db.logs",
        "rota.db.logs-wal",
        "rota.db.logs-shm",
    ];
    for f in files {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    env.stop_server();
    for f in ["join.token", "secret.key", "rota.db.logs", "rota.db-wal"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    env.start_server(&[]);
    let log = env.server_log();
    for f in ["join.token", "secret.key", "rota.db.logs", "rota.db-wal"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} after a restart");
        assert!(
            log.contains(&format!("{} was mode 0644", data.join(f).display())),
            "no notice for {f}:\n{log}"
        );
    }
}
