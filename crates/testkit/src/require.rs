//! The one way a test may skip: [`require`] a prerequisite this machine may lack
//! (PostgreSQL, network namespaces, a browser, the test hooks of the `rota` binary). Under
//! `ROTA_REQUIRE_ALL=1` (set by `.ci/run`) a missing prerequisite fails the test instead.

use crate::rota_bin;
use std::process::{Command, Stdio};

/// True when `what` is available. Otherwise the test must return at once: this prints why
/// it is skipped (stderr), or panics naming `what` and `how` when `ROTA_REQUIRE_ALL` is set,
/// so CI never passes with a test that did not run.
#[must_use]
pub fn require(available: bool, what: &str, how: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("ROTA_REQUIRE_ALL").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("ROTA_REQUIRE_ALL is set and this test needs {what}: {how}");
    }
    eprintln!("SKIPPED: this test needs {what} ({how}); set ROTA_REQUIRE_ALL=1 to fail instead");
    false
}

/// The test hooks of the `rota` binary under test (hidden `worker run` flags, the spawn
/// hook), which exist only when it was built with the feature `rota-cli/test-hooks`. Asks
/// the binary itself: a plain build refuses the hidden flag.
#[must_use]
pub fn require_test_hooks() -> bool {
    let hooked = Command::new(rota_bin())
        .args(["worker", "run", "--test-hang-control", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        hooked,
        "a rota binary with the test hooks",
        "run `cargo test --workspace --features rota-cli/test-hooks`",
    )
}
