//! `rota routing dump [--json|--sample]`: prints the active routing (and where it came
//! from), or a starter file to copy.
//!
//! JSON: `{"source": PATH|null, "routing": {"aliases": {ALIAS: QUEUE}, "routes":
//! [{"match", "queue"}]}}`.

use crate::output::Out;
use crate::routing::{Loaded, SAMPLE};
use anyhow::Result;
use std::process::ExitCode;

pub(crate) fn dump(loaded: &Loaded, json: bool, sample: bool) -> Result<ExitCode> {
    let mut out = Out::new();
    if sample {
        out.write_all(SAMPLE.as_bytes())?;
    } else if json {
        out.json(loaded)?;
    } else {
        match &loaded.source {
            Some(p) => writeln!(out, "# routing from {}", p.display())?,
            None => writeln!(
                out,
                "# no routing configured (set ROTA_ROUTING_CONFIG, or see `rota routing dump --sample`)"
            )?,
        }
        writeln!(out, "aliases:{}", if loaded.routing.aliases.is_empty() { " {}" } else { "" })?;
        for (a, q) in &loaded.routing.aliases {
            writeln!(out, "  {a}: {q}")?;
        }
        writeln!(out, "routes:{}", if loaded.routing.routes.is_empty() { " []" } else { "" })?;
        for r in &loaded.routing.routes {
            writeln!(out, "  - match: \"{}\"\n    queue: {}", r.pattern, r.queue)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
