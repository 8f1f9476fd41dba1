//! `rota worker [run]`: one worker in the foreground. A first SIGTERM/SIGINT drains it, a
//! second stops it now. Exit 0 after a clean stop (also one asked on the control port), 78
//! for a refusal or bad configuration (never restarted), 1 otherwise. Supervised, it also
//! reports readiness on `ROTA_READY_FD`, serves `--bind` and stops with its supervisor.

use crate::args::{GlobalArgs, WorkerRunArgs};
use crate::config::{Paths, server_url};
use crate::failure::{EXIT_CONFIG, Failure, with_code};
use crate::output::note;
use crate::signals::StopSignals;
use crate::tokens;
use anyhow::{Context, Result, anyhow};
use rota_domain::settings::WorkerSettings;
use rota_lifecycle::control::{self, SECRET_FILE_ENV, Served};
use rota_lifecycle::paths::{DEFAULT_PROFILE, Dirs, Instance};
use rota_lifecycle::readiness::{self, NotReady, ReadyLine};
use rota_lifecycle::saved::parse_bind;
use rota_lifecycle::supervisor::EXIT_RECYCLE;
use rota_worker::{ShutdownHandle, ShutdownMode, WorkerConfig, WorkerError};
use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The readiness pipe, until its one line has been written.
type Pipe = Arc<Mutex<Option<File>>>;

pub(crate) async fn run(
    global: &GlobalArgs,
    args: &WorkerRunArgs,
    paths: &Paths,
    spawner: Option<rota_worker::Spawner>,
    run_as: Result<Option<rota_worker::RunAs>, rota_worker::RunAsError>,
) -> Result<ExitCode> {
    let pipe: Pipe = Arc::new(Mutex::new(readiness::take_from_stdout()));
    let prepared = prepare(global, args, paths, run_as).await;
    let (mut config, port, registered, handle) = match prepared {
        Ok(p) => p,
        Err(e) => {
            report(
                &pipe,
                ReadyLine::failed(NotReady::Refused, format!("{e:#}"), Some(i32::from(EXIT_CONFIG))),
            );
            return Err(config_error(e));
        }
    };
    config.spawner = spawner;
    let signals = StopSignals::install()?;
    watch_supervisor(&handle);
    let stop_now = CancellationToken::new();
    let graceful = CancellationToken::new();
    signals.spawn_worker_modes(handle.clone(), graceful.clone(), stop_now.clone());
    tokio::spawn({
        let (handle, graceful) = (handle.clone(), graceful.clone());
        async move {
            graceful.cancelled().await;
            handle.request(ShutdownMode::Warm);
        }
    });

    let server = config.server.clone();
    let (ready_tx, ready_rx) = oneshot::channel::<rota_worker::Ready>();
    tokio::spawn({
        let (pipe, crash_file) = (pipe.clone(), args.test_crash_file());
        async move {
            let Ok(ready) = ready_rx.await else { return };
            registered.store(true, Ordering::Relaxed);
            // Machine-readable: tests and scripts wait for this line.
            note(format_args!(
                "rota worker ready: {} registered with {server} (session {})",
                ready.name, ready.session_id
            ));
            report(
                &pipe,
                ReadyLine {
                    ok: true,
                    pid: Some(std::process::id()),
                    port,
                    name: Some(ready.name.clone()),
                    session_id: Some(ready.session_id.to_string()),
                    ..ReadyLine::default()
                },
            );
            #[cfg(feature = "test-hooks")]
            if let Some(file) = crash_file {
                crash_when_exists(file).await;
            }
            #[cfg(not(feature = "test-hooks"))]
            let _ = crash_file;
        }
    });
    let mut worker = tokio::spawn(rota_worker::run_with(config, handle, Some(ready_tx)));
    let result = tokio::select! {
        res = &mut worker => res,
        () = stop_now.cancelled() => {
            // Dropping the worker is its hard stop: it kills every running step's process
            // group at once instead of waiting for the drain.
            worker.abort();
            worker.await
        }
    };
    match result {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(WorkerError::Recycled { reason })) => {
            // Not a failure: the supervisor starts a fresh worker under the same name.
            note(format_args!("rota worker: recycled ({reason}); exiting with {EXIT_RECYCLE}"));
            Ok(ExitCode::from(EXIT_RECYCLE as u8))
        }
        Err(e) if e.is_cancelled() => Ok(ExitCode::from(1)),
        Ok(Err(
            e @ (WorkerError::Refused { .. }
            | WorkerError::InvalidConfig(_)
            | WorkerError::WorkspaceInUse { .. }
            | WorkerError::NameHeld { .. }
            | WorkerError::Forgotten { .. }),
        )) => {
            report(&pipe, ReadyLine::failed(NotReady::Refused, e.to_string(), Some(i32::from(EXIT_CONFIG))));
            Err(with_code(EXIT_CONFIG, anyhow::Error::new(e)))
        }
        Ok(Err(e)) => {
            report(
                &pipe,
                ReadyLine::failed(NotReady::Exited, rota_lifecycle::error::with_causes(&e), Some(1)),
            );
            Err(anyhow::Error::new(e).context("worker stopped with an error"))
        }
        Err(e) => Err(anyhow::Error::new(e).context("worker panicked")),
    }
}

/// Configuration, logging and the control port: everything that can be wrong before the
/// worker starts (exit 78).
async fn prepare(
    global: &GlobalArgs,
    args: &WorkerRunArgs,
    paths: &Paths,
    run_as: Result<Option<rota_worker::RunAs>, rota_worker::RunAsError>,
) -> Result<(WorkerConfig, Option<u16>, Arc<AtomicBool>, ShutdownHandle)> {
    let mut config = worker_config(global, args, paths)?;
    // Whether that user can reach the workspace is the worker's first check (exit 78).
    config.run_as = run_as?;
    init_logging(args)?;
    // It holds the join token: a step of the same user must not read its environment or
    // memory (its spawner helpers do the same at their own start).
    rota_worker::dumpable::forbid_dumps();
    if args.workspace.is_none() {
        rota_lifecycle::workspace::retire_legacy(rota_lifecycle::workspace::legacy_dir(
            &paths.data_dir,
            &instance(args)?,
        ))
        .await;
    }
    #[cfg(feature = "test-hooks")]
    if let Some(mib) = args.bench_ballast_mib {
        hold_ballast(mib);
    }
    let handle = ShutdownHandle::new();
    let registered = Arc::new(AtomicBool::new(false));
    let port = match &args.bind {
        None => None,
        Some(bind) => {
            let addr = parse_bind(bind)?;
            let secret = match std::env::var_os(SECRET_FILE_ENV) {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| {
                            format!("cannot read the control secret {}", PathBuf::from(&f).display())
                        })?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let served = Served {
                handle: handle.clone(),
                registered: registered.clone(),
                secret,
                hang: args.test_hang_control(),
            };
            let port = control::serve(addr, served)
                .await
                .with_context(|| format!("--bind {addr}: cannot listen"))?;
            tracing::info!(port, "control port listening on {}", std::net::SocketAddr::new(addr.ip(), port));
            Some(port)
        }
    };
    Ok((config, port, registered, handle))
}

/// Allocates and touches `mib` MiB that live until the process exits (`--bench-ballast-mib`).
/// Leaked on purpose: it must stay resident, and it is freed with the process.
#[cfg(feature = "test-hooks")]
fn hold_ballast(mib: u32) {
    let bytes = usize::try_from(mib).unwrap_or(0) * 1024 * 1024;
    // A non-zero fill: zeroed allocations may be mapped lazily and never become resident.
    let ballast: &'static mut [u8] = vec![0x5a_u8; bytes].leak();
    tracing::info!(mib, resident = ballast.len(), "holding benchmark ballast");
}

/// `--log-path`, `--log-file` or stderr. `--log-file` is the profile's log in the state
/// dir only under its supervisor; a foreground worker gets a file of its own
/// (`<key>.foreground.log`), so it never writes into a background worker's log.
fn init_logging(args: &WorkerRunArgs) -> Result<()> {
    let path = match (&args.log_path, args.log_file) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            let dirs = Dirs::from_env()?;
            dirs.ensure()?;
            let paths = dirs.instance(&instance(args)?);
            let supervised = std::env::var_os(rota_lifecycle::supervisor::SUPERVISOR_PID_ENV).is_some();
            Some(if supervised { paths.default_log } else { paths.foreground_log })
        }
        (None, false) => None,
    };
    match path {
        None => super::init_tracing(),
        Some(p) => {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&p)
                .with_context(|| format!("cannot open the log file {}", p.display()))?;
            super::init_tracing_to(file);
        }
    }
    Ok(())
}

fn instance(args: &WorkerRunArgs) -> Result<Instance> {
    match std::env::var("ROTA_WORKER_NODE") {
        Ok(node) if !node.is_empty() => Ok(Instance::node(&node)?),
        _ => Ok(Instance::profile(args.profile.as_deref())?),
    }
}

/// Under a supervisor: SIGTERM (a warm drain) when it dies, so that no worker outlives it
/// unsupervised. If it is already gone, drain now.
fn watch_supervisor(handle: &ShutdownHandle) {
    if !rota_lifecycle::supervisor::follow_supervisor() {
        handle.request(ShutdownMode::Warm);
    }
}

fn report(pipe: &Pipe, line: ReadyLine) {
    if let Some(f) = pipe.lock().unwrap_or_else(PoisonError::into_inner).take() {
        readiness::send(f, &line);
    }
}

/// TEST ONLY (`--test-crash-file`): exits abruptly, leaving steps behind, while the file
/// exists, so that supervision can be tested with real crashes.
#[cfg(feature = "test-hooks")]
async fn crash_when_exists(file: PathBuf) {
    loop {
        if file.exists() {
            tracing::error!("TEST ONLY: {} exists (--test-crash-file): crashing now", file.display());
            std::process::exit(1);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Bad flags or a missing join token are configuration errors: exit 78, not 2.
fn config_error(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<Failure>() {
        Ok(f) => with_code(EXIT_CONFIG, f.error),
        Err(e) => with_code(EXIT_CONFIG, e),
    }
}

/// The worker's configuration: its [`WorkerSettings`] (from these flags, or laid over by
/// a node's environment) resolved against this machine, plus the join token.
fn worker_config(global: &GlobalArgs, args: &WorkerRunArgs, paths: &Paths) -> Result<WorkerConfig> {
    let mut settings = args.settings(Some(server_url(&global.server)?), global.namespace.clone());
    if settings.queues.is_empty()
        && let Ok(q) = std::env::var("ROTA_WORKER_QUEUES")
    {
        settings.queues = q.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    }
    // Under a supervisor: the saved token's file (by path: the token is never in the
    // worker's environment), else the local server's join.token.
    let token_file = std::env::var_os(rota_lifecycle::supervisor::JOIN_TOKEN_FILE_ENV)
        .filter(|f| !f.is_empty())
        .map_or_else(|| paths.join_token(), PathBuf::from);
    let join_token = match &args.join_token {
        Some(t) => t.trim().to_string(),
        None => tokens::read(&token_file)?.ok_or_else(|| {
            anyhow!(
                "no join token: pass --join-token or set ROTA_JOIN_TOKEN (a server on this machine \
                 writes it to {})",
                token_file.display()
            )
        })?,
    };
    let mut config = configure(&settings, join_token, &instance(args)?, &paths.data_dir)?;
    if let Some(f) = &global.ca_cert {
        config.ca = rota_client::CaCerts::from_pem_file(f)?;
    }
    config.replace = args.replace
        || std::env::var_os(rota_lifecycle::supervisor::REPLACE_ONCE_ENV).is_some_and(|v| v == "1");
    config.supervised = std::env::var_os(rota_lifecycle::supervisor::SUPERVISOR_PID_ENV).is_some();
    Ok(config)
}

/// [`WorkerSettings`] as the worker crate's configuration: unset settings keep the
/// worker's defaults; the name defaults to the host (`profile@host`, or the node name).
fn configure(
    s: &WorkerSettings,
    join_token: String,
    inst: &Instance,
    data_dir: &std::path::Path,
) -> Result<WorkerConfig> {
    s.check().map_err(crate::failure::usage)?;
    let mut config = WorkerConfig::new(
        s.server.clone().unwrap_or_default(),
        join_token,
        s.workspace.clone().unwrap_or_default(),
    );
    match inst {
        Instance::Node(node) => config.name = node.clone(),
        Instance::Profile(p) if p != DEFAULT_PROFILE => {
            config.profile = Some(p.clone());
            config.name = format!("{p}@{}", config.host);
        }
        Instance::Profile(_) | Instance::Server => {}
    }
    if let Some(name) = &s.name {
        config.name = name.clone();
    }
    if let Some(ns) = &s.namespace {
        config.namespace = ns.clone();
    }
    if s.workspace.is_none() {
        config.workspace = rota_lifecycle::workspace::default_dir(data_dir, &config.namespace, &config.name)?;
    }
    if !s.queues.is_empty() {
        config.queues = s.queues.clone();
    }
    config.tags = s.tags.clone();
    if let Some(n) = s.concurrency {
        config.concurrency = n;
    }
    config.drain_timeout = s.drain_timeout();
    config.autoscale = s.autoscale.map(|a| (a.min, a.max));
    if let Some(n) = s.scale_up_step {
        config.scale_up_step = n;
    }
    if let Some(n) = s.scale_down_step {
        config.scale_down_step = n;
    }
    if let Some(d) = s.idle_period {
        config.idle_period = d;
    }
    if let Some(d) = s.cooldown {
        config.cooldown = d;
    }
    config.max_jobs = s.max_jobs;
    config.max_memory = s.max_memory;
    Ok(config)
}
