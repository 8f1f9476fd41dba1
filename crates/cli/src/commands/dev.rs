//! `rota dev`: a server on SQLite and one local worker in one process, the zero-setup way
//! to try rota. The worker joins over HTTP like any other, so what works here works on a
//! fleet. Ctrl-C drains the worker first, then stops the server; exit 0.

use super::server::Prepared;
use crate::args::{DEFAULT_ADDR, DevArgs};
use crate::config::{Paths, ServerSetup};
use crate::output::note;
use crate::signals::StopSignals;
use anyhow::{Context, Result, anyhow};
use rota_worker::WorkerConfig;
use std::process::ExitCode;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// `namespace`: the one worker's (`--namespace`; else `default`).
pub(crate) async fn run(
    args: &DevArgs,
    namespace: Option<&str>,
    paths: &Paths,
    spawner: Option<rota_worker::Spawner>,
) -> Result<ExitCode> {
    if args.server.tls_cert.is_some() || args.server.insecure_http {
        return Err(crate::failure::usage(
            "rota dev serves plain HTTP on loopback; --tls-cert, --tls-key and --insecure-http are for rota server",
        ));
    }
    let settings = ServerSetup::from_settings(&args.server.settings(), paths)?;
    super::init_tracing();
    // It holds the secret key and the secret values its steps are given.
    rota_worker::dumpable::forbid_dumps();
    let signals = StopSignals::install()?;
    let server = Prepared::new(&settings, paths).await?;
    let url = server.url.clone();
    // First, so that scripts waiting for the URL see it before any worker log line.
    note(format_args!("rota server listening on {url}"));

    let mut worker_config =
        WorkerConfig::new(url.clone(), server.join_token.clone(), args.workspace.clone().unwrap_or_default());
    worker_config.concurrency = args.concurrency;
    if let Some(ns) = namespace {
        worker_config.namespace = ns.to_string();
    }
    worker_config.spawner = spawner;
    if args.workspace.is_none() {
        worker_config.workspace = rota_lifecycle::workspace::default_dir(
            &paths.data_dir,
            &worker_config.namespace,
            &worker_config.name,
        )?;
        let legacy = rota_lifecycle::workspace::legacy_dir(
            &paths.data_dir,
            &rota_lifecycle::paths::Instance::profile(None)?,
        );
        rota_lifecycle::workspace::retire_legacy(legacy).await;
    }

    let tokens_created = server.tokens_created;
    let log_quota = server.log_quota.clone();
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(rota_server::run_with(
        server.listener,
        server.store,
        server.config,
        server.seams,
        server_stop.clone(),
    ));

    let (drain, stop_now) = (CancellationToken::new(), CancellationToken::new());
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut worker_task = tokio::spawn(rota_worker::run(worker_config, drain.clone(), Some(ready_tx)));

    // Wait for the worker to register before telling anyone to submit.
    tokio::select! {
        ready = ready_rx => {
            if ready.is_ok() {
                banner(&url, paths, &settings, tokens_created, &log_quota);
            }
        }
        res = &mut worker_task => {
            server_stop.cancel();
            let _ = server_task.await;
            return match res {
                Ok(Ok(())) => Err(anyhow!("the local worker stopped before it was ready")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the local worker failed to start")),
                Err(e) => Err(anyhow::Error::new(e).context("the local worker panicked")),
            };
        }
    }

    signals.spawn_escalation(drain.clone(), stop_now.clone());
    let worker_result = tokio::select! {
        res = &mut worker_task => res,
        () = stop_now.cancelled() => {
            // Dropping the worker kills its steps' process groups at once (hard stop).
            worker_task.abort();
            worker_task.await
        }
    };
    server_stop.cancel();
    let server_result = server_task.await;

    match worker_result {
        Ok(Ok(())) => {}
        Err(e) if e.is_cancelled() => {}
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("the local worker failed")),
        Err(e) => return Err(anyhow::Error::new(e).context("the local worker panicked")),
    }
    server_result.context("the server panicked")?.context("server stopped with an error")?;
    tracing::info!("dev server stopped");
    Ok(ExitCode::SUCCESS)
}

fn banner(
    url: &str,
    paths: &Paths,
    settings: &ServerSetup,
    tokens_created: super::server::TokensCreated,
    log_quota: &str,
) {
    note(format_args!("rota dev: server and one local worker are up (database {})", settings.database));
    super::server::announce_tokens(paths, tokens_created);
    note(format_args!("log quota: {log_quota}"));
    let default = format!("http://{DEFAULT_ADDR}");
    let prefix = if url == default { String::new() } else { format!("ROTA_SERVER={url} ") };
    // Pasted as printed, these must work: after `cargo run` no `rota` is on the PATH.
    let rota = rota_lifecycle::shell::this_program();
    note("try, in another terminal:");
    note(format_args!("  {prefix}{rota} job submit -- echo hello"));
    note(format_args!("  {prefix}{rota} job list"));
    if rota != "rota" {
        note(
            "(to type just `rota`, put it on your PATH: `cargo install --path crates/cli` in rota's source tree)",
        );
    }
    note(format_args!("dashboard: {}/ui (log in with the admin token above)", url.trim_end_matches('/')));
    note("Ctrl-C stops both (running steps finish first).");
}
