//! `rota-bench`: the measuring side of `bench/run`. Each subcommand prints one JSON object
//! on stdout so the orchestrator (`bench/orchestrate.py`) can tabulate runs. It starts real
//! `rota` processes (release build) in a throwaway directory and never reuses state.
//!
//! Every workload object carries `"workload"`, its figures, and the exactly-once counts
//! `"lost"` and `"duplicated"` (plus `"reexecuted"` where re-runs are expected); the
//! orchestrator fails the whole run if any `lost` or `duplicated` is non-zero.
//!
//! `--backend postgres` runs every server of the workload on a PostgreSQL database of its
//! own (`store`); the object then also carries `"backend"` and the PostgreSQL server's
//! settings that decide what the figures mean (`"postgres"`).

mod capacity;
mod cluster;
mod latency;
mod limits;
mod logs;
mod probes;
mod recovery;
mod soak;
mod start;
mod store;
mod submit;
mod tls;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "rota-bench", about = "rota benchmark probes (see bench/run)")]
struct Args {
    /// The store of the servers started: sqlite (a file in the run's temp dir) or postgres
    /// (a database of its own on the server ROTA_TEST_POSTGRES_URL names, dropped after).
    #[arg(long, global = true, default_value = "sqlite", value_parser = store::parse_backend)]
    backend: rota_testkit::Backend,
    /// Serve HTTPS (a certificate from a CA of the run's own, trusted by every client and
    /// worker through `--ca-cert`); plain HTTP on loopback otherwise, as the peers are run.
    #[arg(long, global = true)]
    tls: bool,
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
    /// The machine's other limits: 1-row SQLite FULL commits/s, loopback HTTP round trip.
    Limits(limits::Args),
    /// Queue `jobs` shell jobs, then time one worker draining them from its launch.
    BurnDown {
        #[arg(long)]
        rota: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        jobs: u32,
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
        /// Make the worker hold this many MiB of resident memory while it works.
        #[arg(long)]
        ballast_mib: Option<u32>,
    },
    /// Synthetic protocol clients that claim and complete without spawning anything.
    ServerCapacity(capacity::Args),
    /// Open-loop submit → spawn latency, at idle or at a fixed arrival rate.
    Latency(latency::Args),
    /// Jobs accepted per second by the API, one per request or batched.
    SubmitRate(submit::Args),
    /// `rota worker start` → registered, repeated.
    WorkerStart(start::Args),
    /// SIGKILL a worker with steps in flight; time until each runs again elsewhere.
    FailureRecovery(recovery::Args),
    /// Log capture throughput: one big writer, many 1 MB writers, burn-down while streaming.
    LogCapture(logs::Args),
    /// Soak and scale (`--full` only): steady offered load, claim latency vs queue depth, RSS.
    Soak(soak::Args),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    store::set_backend(args.backend);
    tls::set(args.tls);
    let rt = tokio::runtime::Runtime::new()?;
    let mut value = match args.cmd {
        Cmd::SpawnProbe { jobs, parallel } => probes::spawn_probe(jobs, parallel)?,
        Cmd::Limits(a) => rt.block_on(limits::run(a))?,
        Cmd::BurnDown { rota, jobs, concurrency, ballast_mib } => {
            rt.block_on(probes::burn_down(&rota, jobs, concurrency, ballast_mib))?
        }
        Cmd::ServerCapacity(a) => rt.block_on(capacity::run(a))?,
        Cmd::Latency(a) => rt.block_on(latency::run(a))?,
        Cmd::SubmitRate(a) => rt.block_on(submit::run(a))?,
        Cmd::WorkerStart(a) => rt.block_on(start::run(a))?,
        Cmd::FailureRecovery(a) => rt.block_on(recovery::run(a))?,
        Cmd::LogCapture(a) => rt.block_on(logs::run(a))?,
        Cmd::Soak(a) => rt.block_on(soak::run(a))?,
    };
    if let Some(obj) = value.as_object_mut()
        && args.backend == rota_testkit::Backend::Postgres
    {
        obj.insert("backend".into(), store::backend_name().into());
        obj.insert("postgres".into(), rt.block_on(store::pg_settings())?.into());
    }
    if let Some(obj) = value.as_object_mut()
        && args.tls
    {
        obj.insert("transport".into(), "https".into());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(())
}
