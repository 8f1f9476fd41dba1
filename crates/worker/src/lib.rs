//! rota's worker: registers with the control plane, heartbeats, claims steps for its free
//! slots, runs each as `sh -c` in its own process group with a built environment, ships
//! the output byte-exact, reports results, and stops steps on timeout, cancel, lost
//! leases (self-fencing) and shutdown. It never names a store and never reads flags or
//! environment variables for its configuration (the CLI builds [`WorkerConfig`]).
//!
//! # Layout
//! - [`config`]: [`WorkerConfig`] and its defaults. `error.rs`: [`WorkerError`].
//! - `lifecycle.rs` (register → session → drain), `session.rs` (registration with backoff),
//!   `context.rs` (shared state), `attempts.rs` (held attempts).
//! - `runner.rs` (claim loop + slots), `handover.rs` (a finished step's slot kept for the
//!   claim its result carries), `executor.rs` (one attempt), `spawn.rs` (a step's
//!   environment), [`spawner`] (the helper process that spawns steps and kills them when
//!   the worker dies), `kill.rs` (TERM → grace → KILL), `pgid.rs` (durable pgid records,
//!   boot reaping), `procfs.rs`, `workspace.rs`, `legacy.rs` (retiring the shared
//!   workspace of earlier releases), `instance.rs` (the persistent instance id).
//! - `heartbeat.rs`, `control.rs`, `logbuf.rs` + `logship.rs` (output), `report.rs`, `fence.rs` (self-fencing),
//!   `memory.rs` (memory limits), `backoff.rs`.
//! - [`dumpable`] (no process of the worker's user may read its memory), `run_as.rs`
//!   ([`RunAs`]: steps as another user, `--run-as`).
//! - `shutdown.rs`: [`ShutdownHandle`] and its warm/soft/hard [`ShutdownMode`]s.

mod attempts;
pub mod backoff;
pub mod config;
mod context;
mod control;
pub mod dumpable;
mod error;
mod executor;
mod fence;
mod fleet;
mod handover;
mod heartbeat;
mod hostconfig;
mod instance;
mod kill;
mod legacy;
mod lifecycle;
mod logbuf;
mod logship;
mod mask;
mod memory;
mod pgid;
mod pool;
pub mod procfs;
mod report;
mod run_as;
mod runner;
mod session;
mod shutdown;
mod spawn;
pub mod spawner;
mod workspace;

pub use config::{WorkerConfig, host_name};
pub use error::WorkerError;
pub use legacy::{Retirement, retire_shared_workspace};
pub use run_as::{RunAs, RunAsError};
pub use shutdown::{ShutdownHandle, ShutdownMode, UnknownShutdownMode};
pub use spawner::{Spawner, SpawnerError};

use context::Ctx;
use rota_client::WorkerClient;
use rota_domain::SessionId;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Dropping the `run` future (an aborted task: the CLI's second signal) must not leave
/// steps running: their groups are KILLed at once and the background tasks stopped.
struct HardStop {
    ctx: Arc<Ctx>,
    background: CancellationToken,
}

impl Drop for HardStop {
    fn drop(&mut self) {
        let n = self.ctx.attempts.kill_all_now();
        if n > 0 {
            tracing::warn!(steps = n, "worker stopped abruptly: killed the running steps' process groups");
        }
        self.background.cancel();
    }
}

/// Sent once, after the first successful registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The session the server created.
    pub session_id: SessionId,
    /// The name the worker registered under.
    pub name: String,
}

/// Runs a worker until `shutdown` is cancelled (a warm drain: no new claims, running
/// steps get `drain_timeout`, then are stopped), then returns `Ok(())`. The same as
/// [`run_with`] with a handle whose warm request is `shutdown`.
pub async fn run(
    config: WorkerConfig,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<Ready>>,
) -> Result<(), WorkerError> {
    run_with(config, ShutdownHandle::from_token(shutdown), ready).await
}

/// Runs a worker until a shutdown is requested on `shutdown`, in the mode requested
/// ([`ShutdownMode`]; a later, harsher request escalates a stop in progress), then
/// returns `Ok(())`. Steps stopped by a soft or hard shutdown are reported lost ("worker
/// shut down"); the worker then flushes its results and unregisters.
///
/// Before registering it locks the workspace, reads (or creates) its persistent instance
/// id and kills process groups a previous worker left behind. An unreachable server is
/// retried with backoff forever; a refusal (bad join token, protocol mismatch) returns
/// [`WorkerError::Refused`] at once, and a name held by a live worker of another instance
/// [`WorkerError::NameHeld`] (also when that instance took the name over while this
/// worker ran: it never takes the name back). `ready`
/// receives [`Ready`] after the first successful registration.
///
/// Dropping the returned future (aborting its task) is a hard stop: every running step's
/// process group is KILLed at once; nothing is reported (the server marks the attempts
/// lost when their leases expire).
pub async fn run_with(
    config: WorkerConfig,
    shutdown: ShutdownHandle,
    ready: Option<oneshot::Sender<Ready>>,
) -> Result<(), WorkerError> {
    config.validate()?;
    let client = WorkerClient::trusting(&config.server, &config.ca)
        .map_err(|e| WorkerError::InvalidConfig(e.to_string()))?;
    let _lock = workspace::prepare(&config.workspace, config.run_as.as_ref())?;
    let instance_id = instance::load_or_create(&config.workspace)?;
    let ws = config.workspace.clone();
    let reaped = tokio::task::spawn_blocking(move || pgid::reap_leftovers(&ws))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|source| WorkerError::Workspace { path: pgid::running_dir(&config.workspace), source })?;
    if !reaped.killed.is_empty() || reaped.stale > 0 {
        tracing::warn!(
            killed = reaped.killed.len(),
            stale = reaped.stale,
            "cleaned up process groups recorded by a previous worker"
        );
    }

    let spawner =
        config.spawner.clone().ok_or_else(|| WorkerError::InvalidConfig("spawner: none given".into()))?;
    spawner
        .use_journal(&config.workspace, config.run_as.is_some())
        .await
        .map_err(|source| WorkerError::Workspace { path: pgid::running_dir(&config.workspace), source })?;
    let spawner_gone = spawner.gone();
    let ctx = Arc::new(Ctx::new(config, client, spawner).with_instance_id(instance_id));
    ctx.fleet.set_shutdown(shutdown.clone());
    let background = CancellationToken::new();
    let _hard_stop = HardStop { ctx: ctx.clone(), background: background.clone() };
    let tasks = [
        tokio::spawn({
            let (ctx, stop) = (ctx.clone(), background.clone());
            async move { ctx.logship.run(&ctx, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop) = (ctx.clone(), background.clone());
            async move { ctx.reporter.run(&ctx, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop) = (ctx.clone(), background.clone());
            async move { fence::watchdog(&ctx, stop).await }
        }),
        tokio::spawn(memory::memory_watch(ctx.clone(), background.clone())),
        tokio::spawn({
            let (ctx, stop) = (ctx.clone(), background.clone());
            async move { fleet::ticker(&ctx, stop).await }
        }),
    ];
    let result = tokio::select! {
        result = lifecycle::serve(&ctx, &shutdown, ready) => result,
        // Without its spawner the worker can neither start nor watch a step: stop, and
        // let the helper's own exit have killed what ran (a supervisor restarts us).
        () = spawner_gone.cancelled() => {
            tracing::error!("the step spawner stopped; the worker stops");
            Err(WorkerError::Spawner("the helper process exited or its socket broke".into()))
        }
    };
    // Whatever still runs (a refusal after a lost session) must not outlive the worker.
    ctx.attempts.stop_all(attempts::StopKind::Superseded);
    background.cancel();
    for task in tasks {
        let _ = task.await;
    }
    match (result, ctx.fleet.recycle_reason()) {
        (Ok(()), Some(reason)) => Err(WorkerError::Recycled { reason }),
        (r, _) => r,
    }
}
