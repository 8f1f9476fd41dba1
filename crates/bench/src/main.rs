//! `rota-bench`: the measuring side of `bench/run`. Each subcommand prints one JSON object
//! on stdout so the script can tabulate runs. It starts real `rota` processes (release
//! build) in a throwaway directory and never reuses state between runs.
//!
//! Subcommands: `spawn-probe` (bare `sh -c true` loop, the hardware ceiling), `burn-down`
//! (N jobs queued first, then one worker drains them), `latency` (idle submit → step start).

mod cluster;
mod probes;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "rota-bench", about = "rota benchmark probes (see bench/run)")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Spawn `sh -c true` with piped output, `parallel` at a time.
    SpawnProbe {
        #[arg(long, default_value_t = 20_000)]
        jobs: u32,
        #[arg(long, default_value_t = 8)]
        parallel: u32,
    },
    /// Queue `jobs` shell jobs, then time one worker draining them from its launch.
    BurnDown {
        #[arg(long)]
        rota: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        jobs: u32,
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
    },
    /// Idle latency: one job at a time, from just before submit to the step's start stamp.
    Latency {
        #[arg(long)]
        rota: PathBuf,
        #[arg(long, default_value_t = 200)]
        samples: u32,
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    let value = match args.cmd {
        Cmd::SpawnProbe { jobs, parallel } => probes::spawn_probe(jobs, parallel)?,
        Cmd::BurnDown { rota, jobs, concurrency } => {
            rt.block_on(probes::burn_down(&rota, jobs, concurrency))?
        }
        Cmd::Latency { rota, samples, concurrency } => {
            rt.block_on(probes::latency(&rota, samples, concurrency))?
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(())
}
