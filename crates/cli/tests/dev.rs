//! What `rota dev` tells a newcomer to run works when pasted (issue 9, point 7): with no
//! `rota` on the PATH (as after `cargo run`) it names this binary by its path; with this
//! binary on the PATH as `rota`, plain `rota`. Real `rota dev` on a free port, an isolated
//! HOME/XDG tree, and the printed line run by `sh -c` exactly as printed.

use rota_testkit::{Env, Proc, wait_for_end};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The test's PATH without any directory that holds a `rota`.
fn path_without_rota() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| !d.join("rota").exists()).collect();
    std::env::join_paths(dirs).expect("PATH")
}

/// Runs `rota dev` in `env` with `path`; returns it, its URL and the first command it
/// suggests, as printed.
fn dev(env: &mut Env, path: &OsString) -> (Proc, String) {
    let mut cmd = Command::new(rota_testkit::rota_bin());
    rota_testkit::isolate(&mut cmd, env);
    cmd.env("PATH", path).env_remove("ROTA_SERVER").args([
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--concurrency",
        "2",
    ]);
    let (proc, _) = Proc::spawn(cmd, "Ctrl-C stops both");
    let out = proc.output();
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("rota server listening on "))
        .unwrap_or_else(|| panic!("no URL printed:\n{out}"))
        .trim()
        .to_string();
    env.url = url;
    let mut lines = out.lines().skip_while(|l| !l.contains("try, in another terminal:"));
    lines.next();
    let first = lines.next().unwrap_or_else(|| panic!("no command printed:\n{out}"));
    let command = first.strip_prefix("  ").unwrap_or_else(|| panic!("not a command line: {first:?}\n{out}"));
    (proc, command.to_string())
}

/// Pastes `command` into `sh -c` in `env`'s tree (a new terminal: no ROTA_SERVER) and
/// checks that it submitted a job that then succeeds.
fn paste(env: &Env, path: &OsString, command: &str) {
    let mut sh = Command::new("sh");
    rota_testkit::isolate(&mut sh, env);
    let o = sh.env("PATH", path).env_remove("ROTA_SERVER").arg("-c").arg(command).output().expect("sh");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "`{command}` failed ({}):\n{out}\n{err}", o.status);
    let id = out.split_whitespace().last().unwrap_or_else(|| panic!("no job id printed: {out}"));
    assert!(out.starts_with("submitted "), "{out}");
    let job = wait_for_end(env, id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
}

#[test]
fn the_first_command_dev_prints_works_when_pasted() {
    let mut env = Env::new();
    let path = path_without_rota();
    let (server, command) = dev(&mut env, &path);
    let exe = Path::new(rota_testkit::rota_bin()).canonicalize().expect("rota");
    assert!(
        command.contains(&format!(" {} job submit -- echo hello", exe.display())),
        "with no rota on the PATH the binary's own path is printed: {command}\n{}",
        server.output()
    );
    assert!(server.output().contains("cargo install --path crates/cli"), "{}", server.output());
    paste(&env, &path, &command);

    // With this very binary on the PATH as `rota`, the command says just `rota`.
    let mut env = Env::new();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(&exe, bin.join("rota")).expect("symlink");
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).expect("PATH");
    let (server, command) = dev(&mut env, &path);
    assert!(command.contains(" rota job submit -- echo hello"), "{command}\n{}", server.output());
    assert!(!server.output().contains("cargo install"), "{}", server.output());
    paste(&env, &path, &command);
}
