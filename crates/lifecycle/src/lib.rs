//! Background workers and the background server on this host: the supervisor/worker pair,
//! their saved settings, files and locks, and the start/stop paths every command shares
//! (the CLI only parses flags into requests and prints). Must not parse command lines or
//! print to stdout.
//!
//! Files: `paths files saved upgrade state locks procs logtail logrotate`; liveness:
//! `identity`; processes: `supervisor reaper readiness control systemd`; `launch` (start),
//! `halt` (stop), `report`; `workspace` (default step directories), `shell` (quoting for
//! printed commands).

pub mod control;
pub mod envfile;
pub mod error;
pub mod files;
pub mod halt;
pub mod identity;
pub mod launch;
pub mod locks;
pub mod logrotate;
pub mod logtail;
pub mod paths;
pub mod procs;
pub mod readiness;
pub mod reaper;
pub mod report;
pub mod saved;
pub mod shell;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod template;
mod upgrade;
pub mod workspace;

pub use error::{Error, Result};
