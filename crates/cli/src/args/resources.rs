//! Clap types of the declarative commands: `apply`, `diff`, `get`, `delete`, `run`.

use super::parse_key_value;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// `rota apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The documents: a YAML (several documents split by `---`) or JSON file, a directory
    /// (every *.yaml, *.yml and *.json in name order) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub(crate) file: PathBuf,
}

/// `rota diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The documents, as for `rota apply -f`.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub(crate) file: PathBuf,
}

/// How `rota get` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum GetFormat {
    /// A table of names, generations and ages.
    Table,
    /// The stored documents as YAML, `---` between them.
    Yaml,
    /// The API's JSON (one object with NAME, a list without).
    Json,
}

/// `rota get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The kind: `Workflow` (`workflows`, `wf`) or `Schedule` (`schedules`, `sched`).
    pub(crate) kind: String,
    /// One resource's name (all of the kind without it).
    pub(crate) name: Option<String>,
    /// Output format (`--json` is `-o json`).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub(crate) output: GetFormat,
}

/// `rota delete`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["kind", "file"]))]
pub(crate) struct DeleteArgs {
    /// The kind: `Workflow` (`workflows`, `wf`) or `Schedule` (`schedules`, `sched`).
    #[arg(requires = "name")]
    pub(crate) kind: Option<String>,
    /// The resource's name.
    pub(crate) name: Option<String>,
    /// Delete every resource these documents declare (as for `rota apply -f`).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", conflicts_with_all = ["kind", "name"])]
    pub(crate) file: Option<PathBuf>,
}

/// `rota run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The workflow to start (declared with `rota apply`).
    pub(crate) workflow: String,
    /// An input value, `NAME=VALUE` (repeat for several); typed by the workflow.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub(crate) inputs: Vec<(String, String)>,
    /// Run on this host (or worker name) instead of the workflow's target.
    #[arg(long, value_name = "HOST")]
    pub(crate) on: Option<String>,
    /// Stream the run's logs and exit with its result (0 succeeded, 1 otherwise).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Starting twice with one key yields one run [default: a fresh key of this command's
    /// own, so a start sent again to another server never makes a second run].
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
}
