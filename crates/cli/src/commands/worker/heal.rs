//! `rota worker heal [--dry-run]`: finds `failed` or expected-but-stopped workers from
//! cached local state only (no subprocess, no network; never ones stopped on purpose) and
//! starts each through `start`'s path with its saved settings, which heal never writes.
//! Events `starting|healed|failed|done` (NDJSON with `--json`), always ending in `done`.
//! `--fleet` heals through the server instead: the same primitive, sent to the linked
//! supervisor of every failed background worker of the namespace, on whichever host.

use crate::args::{GlobalArgs, HealArgs};
use crate::output::{Out, note};
use anyhow::Result;
use rota_lifecycle::files;
use rota_lifecycle::launch::{self, StartRequest};
use rota_lifecycle::locks;
use rota_lifecycle::paths::{Dirs, InstancePaths};
use rota_lifecycle::saved::all_saved;
use rota_lifecycle::state::{Phase, RuntimeState};
use serde::Serialize;
use std::process::ExitCode;

/// One line of the heal report.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    /// starting, healed, failed, done (and `detected` with --dry-run).
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<String>,
    /// Why it needed healing (failed, expected_but_stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The healed worker's pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<usize>,
}

/// A worker that needs healing.
struct Unhealthy {
    paths: InstancePaths,
    state: &'static str,
    error: Option<String>,
}

pub(super) fn heal(global: &GlobalArgs, args: &HealArgs) -> Result<ExitCode> {
    if args.fleet {
        return crate::commands::block_on(fleet_heal(global, args));
    }
    let mut out = Out::new();
    let mut emit = |e: Event| -> Result<()> {
        if global.json {
            let line = serde_json::to_string(&e)?;
            writeln!(out, "{line}")
        } else {
            let who = e.worker.as_deref().unwrap_or_default();
            match e.phase {
                "detected" => writeln!(
                    out,
                    "would heal {who} ({}{})",
                    e.state.unwrap_or_default().replace('_', "-"),
                    e.error.map(|x| format!(": {x}")).unwrap_or_default()
                ),
                "starting" => writeln!(out, "starting {who}"),
                "healed" => writeln!(out, "healed {who} (worker pid {})", e.pid.unwrap_or_default()),
                "failed" if who.is_empty() => writeln!(out, "failed: {}", e.error.unwrap_or_default()),
                "failed" => writeln!(out, "failed {who}: {}", e.error.unwrap_or_default()),
                _ => writeln!(out, "done"),
            }
        }
    };
    let (mut healed, mut failed) = (0usize, 0usize);
    let dirs = Dirs::from_env();
    match dirs.as_ref().map_err(|e| format!("{e:#}")).and_then(|d| detect(d).map_err(|e| format!("{e:#}"))) {
        Err(error) => {
            failed += 1;
            emit(Event {
                phase: "failed",
                error: Some(format!("cannot detect unhealthy workers: {error}")),
                ..Event::default()
            })?;
        }
        Ok(found) => {
            let dirs = dirs.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            for u in found {
                let worker = Some(u.paths.key.clone());
                if args.dry_run {
                    emit(Event {
                        phase: "detected",
                        worker,
                        state: Some(u.state),
                        error: u.error,
                        ..Event::default()
                    })?;
                    continue;
                }
                emit(Event {
                    phase: "starting",
                    worker: worker.clone(),
                    state: Some(u.state),
                    ..Event::default()
                })?;
                match heal_one(dirs, &u.paths, args) {
                    Ok(pid) => {
                        healed += 1;
                        emit(Event { phase: "healed", worker, pid, ..Event::default() })?;
                    }
                    Err(e) => {
                        failed += 1;
                        let error = match crate::failure::start_failure(&e) {
                            Some(f) => f.what().to_string(),
                            None => format!("{e:#}"),
                        };
                        emit(Event { phase: "failed", worker, error: Some(error), ..Event::default() })?;
                    }
                }
            }
        }
    }
    emit(Event { phase: "done", healed: Some(healed), failed: Some(failed), ..Event::default() })?;
    let summary = format!("Healed {healed} worker(s), {failed} failed.");
    if global.json {
        note(summary);
    } else {
        writeln!(Out::new(), "{summary}")?;
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Workers to heal, from cached local state only.
fn detect(dirs: &Dirs) -> Result<Vec<Unhealthy>> {
    let mut found = Vec::new();
    for (paths, meta) in all_saved(dirs)? {
        if meta.is_err() {
            continue;
        }
        let st: RuntimeState = match files::peek_json(&paths.state) {
            Ok(Some(s)) => s,
            Ok(None) | Err(_) => continue,
        };
        if st.stopped_by_user {
            continue;
        }
        let state = match st.phase {
            Phase::Failed => "failed",
            Phase::Running | Phase::Starting | Phase::Backoff | Phase::Stopping
                if !locks::is_held(&paths.instance_lock).unwrap_or(true) =>
            {
                "expected_but_stopped"
            }
            _ => continue,
        };
        let error = st.failed_reason.or(st.last_error);
        found.push(Unhealthy { paths, state, error });
    }
    Ok(found)
}

/// Reset + start, exactly as `rota worker start` with no flags would.
fn heal_one(dirs: &Dirs, paths: &InstancePaths, args: &HealArgs) -> Result<Option<i32>> {
    let mut notes = Vec::new();
    let meta = rota_lifecycle::saved::load(paths, &mut notes)?.ok_or_else(|| launch::nothing_saved(paths))?;
    let req =
        StartRequest { default_server: meta.url(), wait: Some(args.wait_timeout), ..StartRequest::default() };
    Ok(launch::start(dirs, paths, &req)?.pid)
}

/// `heal --fleet`: the server detects from its cached supervisor reports and heals through
/// them; its events are printed as the local heal prints its own (NDJSON with `--json`).
async fn fleet_heal(global: &GlobalArgs, args: &HealArgs) -> Result<ExitCode> {
    let api = crate::commands::job::Api::connect(global, &crate::config::Paths::from_env()?)?;
    let resp = heal_fleet(&api, args.dry_run, args.wait_timeout, args.worker.clone()).await?;
    let mut out = Out::new();
    let (mut healed, mut failed) = (0usize, 0usize);
    for e in &resp.events {
        if global.json {
            let line = serde_json::to_string(e)?;
            writeln!(out, "{line}")?;
        } else {
            let who = format!(
                "{}{}",
                e.worker.as_deref().unwrap_or_default(),
                e.host.as_deref().map(|h| format!(" on {h}")).unwrap_or_default()
            );
            match e.phase.as_str() {
                "detected" => writeln!(
                    out,
                    "would heal {who} (failed{})",
                    e.error.as_deref().map(|x| format!(": {x}")).unwrap_or_default()
                )?,
                "starting" => writeln!(out, "starting {who}")?,
                "healed" => writeln!(out, "healed {who} (worker pid {})", e.pid.unwrap_or_default())?,
                "failed" => writeln!(out, "failed {who}: {}", e.error.as_deref().unwrap_or_default())?,
                _ => writeln!(out, "done")?,
            }
        }
        if e.phase == "done" {
            healed = e.healed.unwrap_or_default();
            failed = e.failed.unwrap_or_default();
        }
    }
    out.flush()?;
    let summary = format!("Healed {healed} worker(s), {failed} failed.");
    if global.json {
        note(summary);
    } else {
        writeln!(Out::new(), "{summary}")?;
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Asks the server to heal the namespace's failed background workers (only to say which
/// with `dry_run`), waiting up to `wait_timeout` for each: `heal --fleet`'s call, also
/// `rota mcp`'s `heal_workers`.
pub(crate) async fn heal_fleet(
    api: &crate::commands::job::Api,
    dry_run: bool,
    wait_timeout: std::time::Duration,
    worker: Option<String>,
) -> Result<rota_api_types::supervisors::FleetHealResponse> {
    // Each heal may take the worker's registration time, plus the supervisor's link.
    let wait = wait_timeout + std::time::Duration::from_secs(15);
    let req = rota_api_types::supervisors::FleetHealRequest {
        dry_run,
        timeout_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        worker,
    };
    api.client.heal_fleet(&req).await.map_err(|e| api.error(e, None))
}
