//! `rota multi --env-file` / `diagnose`: an env file's text. Must never panic; whatever it
//! accepts has valid variable names.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own file, compiled in (it uses std only): linking `rota-lifecycle` would
// build its server, worker and HTTP client stack (tokio, axum, reqwest, aws-lc) with
// coverage instrumentation for one 130-line function.
#[path = "../../crates/lifecycle/src/envfile.rs"]
#[allow(dead_code)]
mod envfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(vars) = envfile::parse(text) {
        for (key, _) in vars {
            assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key}");
        }
    }
});
