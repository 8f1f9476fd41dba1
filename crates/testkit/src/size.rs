//! How big slow scenarios run: small by default (what `.ci/run` and a plain `cargo test`
//! run), full with `ROTA_TEST_SIZE=full` (`scripts/full-size-tests`). Sizes only; a test
//! asserts the same things at either size.

/// `small` unless `ROTA_TEST_SIZE=full`; says on stderr which size `what` runs at.
pub fn scenario_size(what: &str, small: usize, full: usize) -> usize {
    let n = match std::env::var("ROTA_TEST_SIZE").as_deref() {
        Err(_) | Ok("" | "small") => small,
        Ok("full") => full,
        Ok(other) => panic!("ROTA_TEST_SIZE={other:?}: expected `small` (the default) or `full`"),
    };
    eprintln!("{what}: {n} (small {small}, full {full}; ROTA_TEST_SIZE=full runs the full size)");
    n
}
