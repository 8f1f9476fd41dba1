//! `rota worker diagnose`: read-only local checks: stale or unparsable pid files, orphaned
//! worker processes, missing or unwritable directories and files, taken fixed control
//! ports, env-file lines that do not parse (by line number), untrusted state files.
//! Warnings vs errors; exit 1 if there is any error.

use crate::args::{DiagnoseArgs, GlobalArgs};
use crate::output::Out;
use anyhow::Result;
use rota_lifecycle::identity::{self, describe_stale_pid};
use rota_lifecycle::paths::{Dirs, InstancePaths};
use rota_lifecycle::saved::{Saved, all_saved, parse_bind};
use rota_lifecycle::state::RuntimeState;
use rota_lifecycle::{envfile, files, halt, procs, template};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Level {
    Ok,
    Warning,
    Error,
}

/// One finding.
#[derive(Debug, Serialize)]
struct Finding {
    level: Level,
    /// What was checked: directory, pidfile, logfile, env_file, process, port, state.
    check: &'static str,
    /// The path, pid or address concerned.
    subject: String,
    message: String,
}

#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(
        &mut self,
        level: Level,
        check: &'static str,
        subject: impl std::fmt::Display,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding { level, check, subject: subject.to_string(), message: message.into() });
    }

    fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }
}

pub(super) fn diagnose(global: &GlobalArgs, args: &DiagnoseArgs) -> Result<ExitCode> {
    let dirs = Dirs::from_env()?;
    let mut r = Report::default();
    let known = all_saved(&dirs).unwrap_or_default();
    check_dirs(&mut r, &dirs);
    let metas: Vec<(InstancePaths, Saved)> = known
        .into_iter()
        .filter_map(|(p, m)| match m {
            Ok(m) => Some((p, m)),
            Err(e) => {
                r.add(
                    Level::Warning,
                    "state",
                    p.meta.display(),
                    format!("saved settings cannot be trusted: {e}"),
                );
                None
            }
        })
        .collect();
    let nodes: Vec<String> = if args.nodes.is_empty() {
        metas.iter().filter_map(|(_, m)| m.node.clone()).collect()
    } else {
        args.nodes.clone()
    };
    let host = rota_worker::host_name();
    let pidfiles = match &args.pidfile {
        Some(t) => expand(&mut r, "pidfile", t, &nodes, &host),
        None => metas.iter().map(|(_, m)| m.pidfile.clone()).collect(),
    };
    for p in &pidfiles {
        check_pidfile(&mut r, p, &metas);
    }
    let logfiles = match &args.logfile {
        Some(t) => expand(&mut r, "logfile", t, &nodes, &host),
        None => metas.iter().map(|(_, m)| m.log_path.clone()).collect(),
    };
    for l in &logfiles {
        check_logfile(&mut r, l);
    }
    let mut env_files: Vec<PathBuf> = args.env_file.iter().cloned().collect();
    if args.env_file.is_none() {
        env_files.extend(metas.iter().filter_map(|(_, m)| m.env_file.clone()));
    }
    for f in &env_files {
        check_env_file(&mut r, f);
    }
    for (p, m) in &metas {
        check_state(&mut r, p);
        check_port(&mut r, p, m);
    }
    check_processes(&mut r, &dirs);
    print(&r, global.json)?;
    Ok(if r.count(Level::Error) > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn expand(r: &mut Report, check: &'static str, t: &str, nodes: &[String], host: &str) -> Vec<PathBuf> {
    let ts = template::timestamp_now();
    if !t.contains("%n") && !t.contains("%I") {
        let v = template::Vars { node: "", host, index: 1, timestamp: &ts };
        return match template::expand(t, &v) {
            Ok(p) => vec![PathBuf::from(p)],
            Err(e) => {
                r.add(Level::Error, check, t, e);
                Vec::new()
            }
        };
    }
    if nodes.is_empty() {
        r.add(Level::Warning, check, t, "the template uses %n or %I, but no nodes are known (give --node)");
        return Vec::new();
    }
    let res = if check == "pidfile" {
        template::pidfiles(t, nodes, host)
    } else {
        template::logfiles(t, nodes, host, &ts)
    };
    res.unwrap_or_else(|e| {
        r.add(Level::Error, check, t, format!("{e:#}"));
        Vec::new()
    })
}

fn check_dirs(r: &mut Report, dirs: &Dirs) {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        r.add(
            Level::Warning,
            "directory",
            dirs.run.display(),
            "XDG_RUNTIME_DIR is not set: pid and lock files live under the state directory",
        );
    }
    for d in [&dirs.state, &dirs.run] {
        match std::fs::metadata(d) {
            Err(_) => r.add(
                Level::Warning,
                "directory",
                d.display(),
                "does not exist yet (created on the first start)",
            ),
            Ok(m) if !m.is_dir() => r.add(Level::Error, "directory", d.display(), "is not a directory"),
            Ok(m) => {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                if m.uid() != rustix::process::getuid().as_raw() {
                    r.add(
                        Level::Error,
                        "directory",
                        d.display(),
                        format!("belongs to uid {}, not to you", m.uid()),
                    );
                } else if !writable(d) {
                    r.add(Level::Error, "directory", d.display(), "is not writable");
                } else if m.permissions().mode() & 0o077 != 0 {
                    r.add(
                        Level::Warning,
                        "directory",
                        d.display(),
                        "is readable by others (fixed to 0700 on the next start)",
                    );
                } else {
                    r.add(Level::Ok, "directory", d.display(), "ok");
                }
            }
        }
    }
}

fn writable(p: &Path) -> bool {
    rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok()
}

/// The nearest existing ancestor of `p`'s directory, and whether the directory itself exists.
fn parent_state(p: &Path) -> (Option<PathBuf>, bool) {
    let Some(dir) = p.parent() else { return (None, false) };
    let mut d = Some(dir);
    while let Some(x) = d {
        if x.exists() {
            return (Some(x.to_path_buf()), x == dir);
        }
        d = x.parent();
    }
    (None, false)
}

fn check_parent(r: &mut Report, check: &'static str, p: &Path) -> bool {
    match parent_state(p) {
        (Some(d), true) if !writable(&d) => {
            r.add(Level::Error, check, p.display(), format!("its directory {} is not writable", d.display()));
            false
        }
        (Some(d), false) if !writable(&d) => {
            r.add(
                Level::Error,
                check,
                p.display(),
                format!("its directory is missing and {} is not writable", d.display()),
            );
            false
        }
        (Some(_), false) => {
            r.add(Level::Warning, check, p.display(), "its directory does not exist (created on start)");
            true
        }
        (None, _) => {
            r.add(Level::Error, check, p.display(), "no existing directory on its path");
            false
        }
        _ => true,
    }
}

fn check_pidfile(r: &mut Report, p: &Path, metas: &[(InstancePaths, Saved)]) {
    if !check_parent(r, "pidfile", p) {
        return;
    }
    let owner = metas.iter().find(|(_, m)| m.pidfile == p);
    match files::read_pidfile(p) {
        Err(e) => r.add(Level::Error, "pidfile", p.display(), format!("cannot be read: {e}")),
        Ok(None) => r.add(Level::Ok, "pidfile", p.display(), "no pid file (not running)"),
        Ok(Some(Err(e))) => r.add(Level::Error, "pidfile", p.display(), format!("unparsable: {e}")),
        Ok(Some(Ok(pid))) => {
            let alive = owner.and_then(|(ip, _)| identity::probe(ip).ok()).and_then(|pr| pr.alive().cloned());
            match alive {
                Some(a) if a.supervisor.pid == pid => {
                    r.add(Level::Ok, "pidfile", p.display(), format!("pid {pid} is the live supervisor"))
                }
                _ => r.add(
                    Level::Warning,
                    "pidfile",
                    p.display(),
                    format!("stale: {}", describe_stale_pid(pid)),
                ),
            }
        }
    }
}

fn check_logfile(r: &mut Report, p: &Path) {
    if !check_parent(r, "logfile", p) {
        return;
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => r.add(Level::Error, "logfile", p.display(), "is a directory"),
        Ok(_) if !writable(p) => r.add(Level::Error, "logfile", p.display(), "is not writable"),
        Ok(_) => r.add(Level::Ok, "logfile", p.display(), "ok"),
        Err(_) => r.add(Level::Ok, "logfile", p.display(), "does not exist yet (created on start)"),
    }
}

fn check_env_file(r: &mut Report, f: &Path) {
    match envfile::load(f) {
        Ok(vars) => r.add(Level::Ok, "env_file", f.display(), format!("{} variable(s)", vars.len())),
        Err(bad) => {
            for b in bad {
                r.add(Level::Error, "env_file", f.display(), b.to_string());
            }
        }
    }
}

fn check_state(r: &mut Report, p: &InstancePaths) {
    if let Err(e) = files::peek_json::<RuntimeState>(&p.state) {
        r.add(
            Level::Warning,
            "state",
            p.state.display(),
            format!("cannot be trusted ({e}); the next command moves it aside"),
        );
    }
}

fn check_port(r: &mut Report, p: &InstancePaths, m: &Saved) {
    let Ok(addr) = parse_bind(&m.bind) else {
        r.add(Level::Error, "port", &m.bind, format!("{}: not a loopback address", p.instance));
        return;
    };
    if addr.port() == 0 {
        return;
    }
    let running = identity::probe(p).ok().and_then(|pr| pr.alive().cloned()).is_some();
    if running {
        return;
    }
    if let Err(e) = std::net::TcpListener::bind(addr) {
        r.add(Level::Error, "port", addr, format!("{} would use it, but it is taken: {e}", p.instance));
    }
}

/// rota supervisors and supervised workers that their instance does not claim. A
/// supervisor is known by its argv (`worker supervise --key K`), a worker by its
/// instance's state file (pid and start time, as its supervisor recorded it); ownership by
/// the instance lock and `/proc` stat and status. Never by a process's environment, which
/// a non-dumpable worker hides.
/// Orphans of this home's workers only. A process counts as ours when it provably is: it
/// holds one of this home's instance locks (`/proc/locks`) or it is the worker a state
/// file here recorded (pid and start time, same boot, our user). A rota process that merely
/// looks alike (`worker supervise --key default` of another home or user) is none of ours.
fn check_processes(r: &mut Report, dirs: &Dirs) {
    let orphan = |r: &mut Report, pid: i32, inst: &dyn std::fmt::Display, why: &str| {
        let argv = procs::cmdline(pid).unwrap_or_default().join(" ");
        r.add(
            Level::Warning,
            "process",
            pid,
            format!("orphaned rota worker process of {inst} ({argv}); {why}"),
        );
    };
    for (paths, _) in all_saved(dirs).unwrap_or_default() {
        let st = files::peek_json::<RuntimeState>(&paths.state).ok().flatten();
        let recorded =
            identity::probe(&paths).ok().and_then(|pr| pr.alive().cloned()).map(|a| a.supervisor.pid);
        for pid in procs::flock_holders(&paths.instance_lock) {
            let live = procs::stat(pid).is_some_and(|s| !s.is_zombie());
            if live && recorded != Some(pid) {
                orphan(
                    r,
                    pid,
                    &paths.instance,
                    "it holds the instance lock, but the state file does not name it",
                );
            }
        }
        if let Some(worker) = st.as_ref().and_then(|st| halt::orphan(&paths, st)) {
            orphan(r, worker.pid, &paths.instance, "its supervisor is gone");
        }
    }
}

fn print(r: &Report, json: bool) -> Result<()> {
    let mut out = Out::new();
    let (errors, warnings) = (r.count(Level::Error), r.count(Level::Warning));
    if json {
        return out
            .json(&serde_json::json!({"errors": errors, "warnings": warnings, "findings": r.findings}));
    }
    for f in r.findings.iter().filter(|f| f.level != Level::Ok) {
        let level = if f.level == Level::Error { "error" } else { "warning" };
        writeln!(out, "{level}: {} {}: {}", f.check.replace('_', " "), f.subject, f.message)?;
    }
    writeln!(out, "{errors} error(s), {warnings} warning(s), {} check(s) fine", r.count(Level::Ok))
}
