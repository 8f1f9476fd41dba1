//! Background workers on this host: the supervisor/worker pair, their files and locks, and
//! the start/stop paths all commands share (`commands/worker/` only parses and prints).
//! Files: `paths files meta state locks procs logtail logrotate`; liveness: `identity`; processes:
//! `supervisor reaper readiness control`; `launch` (start), `halt` (stop), `report`.

pub(crate) mod control;
pub(crate) mod envfile;
pub(crate) mod files;
pub(crate) mod halt;
pub(crate) mod identity;
pub(crate) mod launch;
pub(crate) mod locks;
pub(crate) mod logrotate;
pub(crate) mod logtail;
pub(crate) mod meta;
pub(crate) mod paths;
pub(crate) mod procs;
pub(crate) mod readiness;
pub(crate) mod reaper;
pub(crate) mod report;
pub(crate) mod state;
pub(crate) mod supervisor;
pub(crate) mod systemd;
pub(crate) mod template;
