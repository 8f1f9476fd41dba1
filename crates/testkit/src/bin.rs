//! Where the `rota` binary under test is. Only finds it; never builds it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `rota` binary of this build: `CARGO_BIN_EXE_rota` when cargo set it for the running
/// test, else `rota` next to the test binary's `deps/` directory (cargo builds the package's
/// binaries before its integration tests).
pub fn rota_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARGO_BIN_EXE_rota") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let bin = profile_dir.join("rota");
        assert!(bin.exists(), "no rota binary at {} (run the tests of rota-cli)", bin.display());
        bin
    })
}
