//! `rota top` as a process: `--help` lists its keys, and with stdout not a terminal (a
//! pipe, as in `rota top | cat`) it says so plainly and exits 78 without writing a single
//! escape code. The view itself is tested in `src/commands/top/tests.rs` (a real server,
//! the run loop on ratatui's `TestBackend`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rota_testkit::{Env, rota};

#[test]
fn top_help_describes_its_keys() {
    let env = Env::new();
    let o = rota(&env).args(["top", "--help"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let help = String::from_utf8_lossy(&o.stdout);
    for want in
        ["Keys:", "Tab", "heal the fleet", "cancel the selected running job", "log tail", "q/Esc/Ctrl-C"]
    {
        assert!(help.contains(want), "{want:?} not in:\n{help}");
    }
}

#[test]
fn top_refuses_a_stdout_that_is_not_a_terminal() {
    let mut env = Env::new();
    env.start_server(&[]);
    // assert_cmd captures stdout through a pipe: what `rota top | cat` gives it.
    let o = rota(&env).arg("top").output().unwrap();
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(o.stdout.is_empty(), "wrote to the pipe: {:?}", String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rota top needs a terminal, and stdout is not one"), "{err}");
    assert!(!err.contains('\x1b'), "escape codes on stderr: {err:?}");
}
