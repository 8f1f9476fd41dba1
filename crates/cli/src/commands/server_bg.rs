//! `rota server start|stop|restart|status`: the control plane in the background, managed
//! exactly like the background worker (same supervisor, locks, files and readiness pipe;
//! key `server`). Flags given to `start` are saved; `stop` is SIGTERM (its graceful stop),
//! KILL after 20 s. Status exits 0 when it runs and answers, 3 when not running, 1 else.

use super::worker::took;
use crate::args::{GlobalArgs, ServerCommand, ServerStartArgs};
use crate::config::{Paths, ServerSetup};
use crate::failure::{EXIT_CONFIG, with_code};
use crate::output::{Out, note, size_text};
use anyhow::{Context, Result};
use rota_domain::settings::ServerSettings;
use rota_lifecycle::halt::{self, Stopped};
use rota_lifecycle::launch::{self, Launched, StartRequest};
use rota_lifecycle::locks;
use rota_lifecycle::paths::{Dirs, Instance, InstancePaths};
use rota_lifecycle::report;
use rota_lifecycle::saved;
use rota_lifecycle::saved::Overrides;
use rota_store_postgres::url::{PgUrl, with_absolute_root_cert};
use rota_worker::ShutdownMode;
use serde_json::json;
use std::process::ExitCode;

pub(crate) fn run(global: &GlobalArgs, command: ServerCommand, paths: &Paths) -> Result<ExitCode> {
    let dirs = Dirs::from_env()?;
    let ipaths = dirs.instance(&Instance::Server);
    match command {
        ServerCommand::Start(args) => start(global, &dirs, &ipaths, &args, paths),
        ServerCommand::Stop => {
            let s = stop_locked_or_not(&dirs, &ipaths)?;
            print_stop(&s, global.json)?;
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Restart(wait) => {
            dirs.ensure()?;
            let _lifecycle = locks::lock(&ipaths.lifecycle_lock)?;
            let mut notes = Vec::new();
            let Some(meta) = saved::load(&ipaths, &mut notes)? else {
                return Err(anyhow::anyhow!(
                    "the background server was never started here; run `rota server start`"
                ));
            };
            let s = halt::stop_locked(&ipaths, &meta, ShutdownMode::Warm, None)?;
            if !global.json {
                print_stop(&s, false)?;
            }
            let req = StartRequest {
                default_server: meta.url(),
                wait: (!wait.no_wait).then_some(wait.wait_timeout),
                ..StartRequest::default()
            };
            let launched =
                super::worker::json_failure(global.json, &ipaths.key, launch::start_locked(&ipaths, &req))?;
            print_start(&ipaths, &launched, global.json)?;
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Status => status(global, &ipaths, paths),
        ServerCommand::RotateToken(args) => super::server::rotate_token(&args, paths),
    }
}

fn start(
    global: &GlobalArgs,
    dirs: &Dirs,
    ipaths: &InstancePaths,
    args: &ServerStartArgs,
    paths: &Paths,
) -> Result<ExitCode> {
    let given = saved_form(args.server.settings())?;
    // The same checks as the foreground server, before anything is spawned (on the
    // settings it will run with: the saved ones with these laid over).
    let mut notes = Vec::new();
    let mut effective = saved::load(ipaths, &mut notes)?.and_then(|m| m.server_settings).unwrap_or_default();
    effective.overlay(&given);
    let setup = ServerSetup::from_settings(&effective, paths)?;
    let overrides = Overrides { server_settings: given, ..super::worker::supervision(&args.supervision) };
    let req = StartRequest {
        overrides,
        default_server: format!("http://{}", setup.listen),
        wait: (!args.wait.no_wait).then_some(args.wait.wait_timeout),
        ..StartRequest::default()
    };
    let launched = super::worker::json_failure(global.json, &ipaths.key, launch::start(dirs, ipaths, &req))?;
    print_start(ipaths, &launched, global.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Settings as the background server keeps them: it runs from another directory, so a
/// SQLite path is made absolute, and so is a PostgreSQL URL's relative `sslrootcert`
/// (the URL itself stays a URL).
fn saved_form(mut s: ServerSettings) -> Result<ServerSettings> {
    if let Some(db) = &s.database {
        s.database = Some(if PgUrl::is_postgres(db) {
            with_absolute_root_cert(db).context("cannot resolve sslrootcert= of --database")?
        } else {
            std::path::absolute(db).context("cannot resolve --database")?.display().to_string()
        });
    }
    if let Some((cert, key)) = s.tls_cert.as_ref().zip(s.tls_key.as_ref()) {
        // Refused now rather than in the background server's log.
        rota_server::tls::ServerTls::load(cert.as_ref(), key.as_ref()).map_err(|e| {
            with_code(EXIT_CONFIG, anyhow::Error::new(e).context("cannot serve TLS (--tls-cert, --tls-key)"))
        })?;
    }
    Ok(s)
}

fn stop_locked_or_not(dirs: &Dirs, ipaths: &InstancePaths) -> Result<Stopped> {
    let mut notes = Vec::new();
    let meta = saved::load(ipaths, &mut notes)?;
    for n in notes {
        note(format_args!("note: {n}"));
    }
    let meta = meta.unwrap_or_else(|| saved::Saved::fresh(ipaths, String::new()));
    Ok(halt::stop(dirs, ipaths, &meta, ShutdownMode::Warm, None)?)
}

fn status(global: &GlobalArgs, ipaths: &InstancePaths, paths: &Paths) -> Result<ExitCode> {
    let mut notes = Vec::new();
    let meta = saved::load(ipaths, &mut notes)?;
    let mut s = report::local(ipaths, meta.as_ref())?;
    s.warnings.extend(notes);
    let url = s.name.clone().or_else(|| meta.as_ref().map(saved::Saved::url));
    if let (true, Some(url)) = (s.running, url) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        // The admin token (flag, ROTA_TOKEN or this home's file) shows who leads; without
        // one the status says only whether it serves.
        let token = match &global.token {
            Some(t) => Some(t.trim().to_string()),
            None => crate::tokens::read(&paths.admin_token()).unwrap_or(None),
        };
        let ca = crate::config::ca_certs(global)?;
        let mut view = runtime.block_on(report::health_view(&url, token, &ca));
        // Unreachable (a certificate this command does not trust): the file on this machine.
        if view.tls_not_after.is_none()
            && let Some((cert, key)) = meta
                .as_ref()
                .and_then(|m| m.server_settings.as_ref())
                .and_then(|s| s.tls_cert.clone().zip(s.tls_key.clone()))
            && let Ok(tls) = rota_server::tls::ServerTls::load(cert.as_ref(), key.as_ref())
        {
            view.tls_not_after = Some(tls.not_after().to_rfc3339());
        }
        s.server = Some(view);
    }
    s.diagnostic = report::diagnose(&s);
    let code = s.exit_code();
    let mut out = Out::new();
    if global.json {
        out.json(&s)?;
    } else {
        let pid = s.worker.as_ref().map(|w| format!(", pid {}", w.pid)).unwrap_or_default();
        writeln!(out, "the background server: {}{pid}", s.state)?;
        if let Some(p) = &s.log_path {
            writeln!(out, "  log: {}", p.display())?;
        }
        writeln!(out, "  {}", s.diagnostic)?;
        if let Some(logs) = s.server.as_ref().and_then(|v| v.logs) {
            writeln!(out, "  logs: {}", log_quota_text(&logs))?;
        }
        if let Some(t) = s.server.as_ref().and_then(|v| v.tls_not_after.as_deref()) {
            writeln!(out, "  tls: {}", expiry_text(t))?;
        }
        if let Some(d) = s.server.as_ref().and_then(|v| v.leadership.as_ref()) {
            writeln!(out, "  leader: {}", leader_text(d))?;
        } else if let Some(e) = s.server.as_ref().and_then(|v| v.error.as_ref()) {
            writeln!(out, "  leader: unknown ({e})")?;
        }
    }
    Ok(ExitCode::from(code))
}

/// `certificate expires 2027-01-01T00:00:00+00:00 (in 25 days)`, with a warning inside
/// the server's 14-day warning window.
fn expiry_text(not_after: &str) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(not_after) else {
        return format!("certificate expires {not_after}");
    };
    let days = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    let warn = rota_server::tls::EXPIRY_WARNING.as_secs() / 86_400;
    match days {
        d if d < 0 => format!("certificate EXPIRED {not_after}: replace it and send the server SIGHUP"),
        d if d < warn as i64 => format!("certificate expires {not_after} (in {d} days: replace it soon)"),
        d => format!("certificate expires {not_after} (in {d} days)"),
    }
}

/// `this server (host h, pid 42, up since …)`, or the other server that leads, or nobody.
fn leader_text(d: &rota_api_types::health::HealthDetail) -> String {
    let who = |s: &rota_api_types::health::ServerIdentity| {
        format!("host {}, pid {}, server id {}, up since {}", s.host, s.pid, s.id, s.started_at.to_rfc3339())
    };
    match &d.leader {
        Some(l) if d.leads => format!("this server ({})", who(l)),
        Some(l) => format!("another server ({})", who(l)),
        None => "nobody right now: lease expiry, deadlines and retention wait for a leader".into(),
    }
}

/// `1.2 GiB of the 5.0 GiB log quota (24%); since start: 300.0 MiB of finished jobs' logs
/// deleted, 0 B of new output refused`.
fn log_quota_text(u: &rota_api_types::jobs::LogQuotaUse) -> String {
    let live = size_text(u.live_bytes);
    let used = match u.quota_bytes {
        Some(q) if q > 0 => {
            let pct = u.live_bytes as f64 * 100.0 / q as f64;
            format!("{live} of the {} log quota ({pct:.0}%)", size_text(q))
        }
        _ => format!("{live} (no log quota)"),
    };
    format!(
        "{used}; since start: {} of finished jobs' logs deleted, {} of new output refused",
        size_text(u.pruned_bytes),
        size_text(u.refused_bytes)
    )
}

fn print_start(ipaths: &InstancePaths, l: &Launched, json: bool) -> Result<()> {
    let mut out = Out::new();
    if json {
        return out.json(&super::worker::LaunchView::of(&ipaths.key, l));
    }
    for n in &l.notes {
        note(format_args!("note: {n}"));
    }
    let url = l.name.as_deref().unwrap_or("?");
    match (&l.outcome, l.pid) {
        (launch::Outcome::Reused, Some(pid)) => {
            writeln!(out, "the background server is already running: pid {pid} on {url}; reused")
        }
        (_, Some(pid)) => {
            writeln!(
                out,
                "started the background server: pid {pid} (supervisor {}), listening on {url} in {}",
                l.supervisor_pid,
                took(l.took)
            )?;
            writeln!(out, "  log: {}", l.meta.log_path.display())
        }
        (_, None) => writeln!(out, "started the background server's supervisor (pid {})", l.supervisor_pid),
    }
}

fn print_stop(s: &Stopped, json: bool) -> Result<()> {
    let mut out = Out::new();
    match s {
        Stopped::NotRunning { .. } if json => out.json(&json!({"outcome": "not_running"})),
        Stopped::NotRunning { .. } => writeln!(out, "the background server is not running; nothing to stop"),
        Stopped::Stopped { worker_pid, took: t, .. } if json => out.json(&json!({
            "outcome": "stopped",
            "pid": worker_pid,
            "tookMs": u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
        })),
        Stopped::Stopped { worker_pid, took: t, .. } => {
            let pid = worker_pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            writeln!(out, "stopped the background server{pid} in {}", took(*t))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn start_settings(argv: &[&str]) -> ServerSettings {
        let cli = Cli::try_parse_from([&["rota", "server", "start"], argv].concat()).unwrap();
        match cli.command {
            Command::Server(s) => match s.command {
                Some(ServerCommand::Start(start)) => saved_form(start.server.settings()).unwrap(),
                other => panic!("not server start: {other:?}"),
            },
            other => panic!("not server: {other:?}"),
        }
    }

    #[test]
    fn the_db_flags_and_a_postgres_url_are_saved_as_given() {
        let url = "postgres://rota@db:5432/rota?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        let s = start_settings(&[
            "--database",
            url,
            "--db-pool-size",
            "4",
            "--db-statement-timeout",
            "1m",
            "--db-pool-timeout",
            "2s",
        ]);
        assert_eq!(s.database.as_deref(), Some(url), "a URL, not a file path made absolute");
        assert_eq!(s.db_pool_size, Some(4));
        assert_eq!(s.db_statement_timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(s.db_pool_timeout, Some(std::time::Duration::from_secs(2)));
        assert_eq!(s.listen, None, "only what was given is saved");
        let rel = start_settings(&["--database", "postgres://u@h/db?sslrootcert=ca.pem"]);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            rel.database,
            Some(format!("postgres://u@h/db?sslrootcert={}", cwd.join("ca.pem").display()))
        );
        // A SQLite path is still made absolute (the background server's cwd is not ours).
        let s = start_settings(&["--database", "rel.db"]);
        assert!(s.database.unwrap().starts_with('/'));
    }
}
