//! Not built yet: see bench/README.md.

use anyhow::{Result, bail};
use serde_json::Value;
use std::path::PathBuf;

/// Arguments of this workload.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `rota` binary (release build).
    #[arg(long)]
    pub(crate) rota: PathBuf,
}

pub(crate) async fn run(args: Args) -> Result<Value> {
    let _ = args.rota;
    bail!("workload capacity is not built yet")
}
