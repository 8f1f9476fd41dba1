//! `rota worker multi start|stop|restart|status NODE...`: several background workers,
//! one per node, each registering under its node name. Templates (`--pidfile`,
//! `--logfile`), the env file and the command are all validated before any node starts;
//! each node's expanded paths are saved with its settings, so stop and status need none.

use super::server_override;
use super::start::print as print_launch;
use super::status::status_of;
use super::stop::{print as print_stop, stop_instance};
use crate::args::{GlobalArgs, MultiAction, MultiArgs};
use crate::config::{Paths, server_url};
use crate::failure::usage;
use crate::output::{Out, note};
use anyhow::Result;
use rota_domain::settings::WorkerSettings;
use rota_lifecycle::envfile;
use rota_lifecycle::halt;
use rota_lifecycle::launch::{self, StartRequest};
use rota_lifecycle::locks;
use rota_lifecycle::paths::{Dirs, Instance};
use rota_lifecycle::report::{EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_RUNNING};
use rota_lifecycle::saved;
use rota_lifecycle::saved::Overrides;
use rota_lifecycle::template;
use std::process::ExitCode;

pub(super) fn multi(global: &GlobalArgs, args: &MultiArgs, paths: &Paths) -> Result<ExitCode> {
    let mut names: Vec<String> = Vec::new();
    for n in &args.nodes {
        if names.contains(n) {
            return Err(usage(format!("node {n} is named twice")));
        }
        names.push(n.clone());
    }
    let nodes: Vec<Instance> = names.iter().map(|n| Instance::node(n)).collect::<Result<_, _>>()?;
    let dirs = Dirs::from_env()?;
    match args.action {
        MultiAction::Start | MultiAction::Restart => start_all(global, args, &dirs, &names, &nodes),
        MultiAction::Stop => {
            for node in &nodes {
                let s = stop_instance(&dirs, &dirs.instance(node), args.mode.mode, args.mode.drain_timeout)?;
                print_stop(node, &s, global.json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MultiAction::Status => {
            let mut worst = EXIT_RUNNING;
            let mut all = Vec::new();
            for node in &nodes {
                let s = status_of(global, &dirs.instance(node), paths)?;
                let code = s.exit_code();
                worst = match (worst, code) {
                    (EXIT_NOT_RUNNING, _) | (_, EXIT_NOT_RUNNING) => EXIT_NOT_RUNNING,
                    (EXIT_DEGRADED, _) | (_, EXIT_DEGRADED) => EXIT_DEGRADED,
                    _ => EXIT_RUNNING,
                };
                if !global.json {
                    let pid = s.worker.as_ref().map(|w| format!(", pid {}", w.pid)).unwrap_or_default();
                    let reg = s
                        .server
                        .as_ref()
                        .map(|v| format!(", server: {}", v.registration))
                        .unwrap_or_default();
                    writeln!(Out::new(), "{node}: {}{pid}{reg} — {}", s.state, s.diagnostic)?;
                }
                all.push(s);
            }
            if global.json {
                Out::new().json(&all)?;
            }
            Ok(ExitCode::from(worst))
        }
    }
}

fn start_all(
    global: &GlobalArgs,
    args: &MultiArgs,
    dirs: &Dirs,
    names: &[String],
    nodes: &[Instance],
) -> Result<ExitCode> {
    // Everything is checked before the first node starts.
    let host = rota_worker::host_name();
    let pidfiles = args.pidfile.as_deref().map(|t| template::pidfiles(t, names, &host)).transpose()?;
    let logfiles = args
        .logfile
        .as_deref()
        .map(|t| template::logfiles(t, names, &host, &template::timestamp_now()))
        .transpose()?;
    let env_vars = match &args.env_file {
        Some(path) => envfile::load(path).map_err(|bad| {
            let lines: Vec<String> = bad.iter().map(ToString::to_string).collect();
            usage(format!("--env-file {}: {}", path.display(), lines.join("; ")))
        })?,
        None => Vec::new(),
    };
    let command = command(args, &env_vars)?;
    let default_server = server_url(&global.server)?;
    let server = server_override(global)?;
    let mut failures = 0;
    for (i, node) in nodes.iter().enumerate() {
        let paths = dirs.instance(node);
        let overrides = Overrides {
            worker: WorkerSettings {
                server: server.clone(),
                queues: args.queues.clone(),
                ..WorkerSettings::default()
            },
            join_token: args.join_token.clone(),
            pidfile: pidfiles.as_ref().map(|p| p[i].clone()),
            log_path: logfiles.as_ref().map(|p| p[i].clone()),
            env_file: args.env_file.clone(),
            ca_cert: global.ca_cert.clone(),
            command: command.clone(),
            ..super::supervision(&args.supervision)
        };
        let req = StartRequest {
            overrides,
            default_server: default_server.clone(),
            wait: (!args.wait.no_wait).then_some(args.wait.wait_timeout),
            ..StartRequest::default()
        };
        let result = if args.action == MultiAction::Restart {
            dirs.ensure()?;
            let _lifecycle = locks::lock(&paths.lifecycle_lock)?;
            let mut notes = Vec::new();
            if let Some(meta) = saved::load(&paths, &mut notes)? {
                halt::stop_locked(&paths, &meta, args.mode.mode, args.mode.drain_timeout)?;
            }
            launch::start_locked(&paths, &req)
        } else {
            launch::start(dirs, &paths, &req)
        };
        match result {
            Ok(l) => print_launch(node, &paths.key, &l, global.json)?,
            Err(e) => {
                failures += 1;
                note(format_args!("rota: {e:#}"));
            }
        }
    }
    Ok(if failures > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `--command` words, else `--command-line`, else ROTA_WORKER_COMMAND from the env file,
/// else from the environment; `None` = `rota worker run`.
fn command(args: &MultiArgs, env_vars: &[(String, String)]) -> Result<Option<Vec<String>>> {
    if !args.command.is_empty() {
        return Ok(Some(args.command.clone()));
    }
    let line = args
        .command_line
        .clone()
        .or_else(|| env_vars.iter().rev().find(|(k, _)| k == "ROTA_WORKER_COMMAND").map(|(_, v)| v.clone()))
        .or_else(|| std::env::var("ROTA_WORKER_COMMAND").ok())
        .filter(|l| !l.trim().is_empty());
    match line {
        None => Ok(None),
        Some(l) => split_words(&l).map(Some).map_err(|e| usage(format!("command line '{l}': {e}"))),
    }
}

/// Splits a command line into words: spaces separate, quotes group, `\` escapes.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => w.push(c),
                            None => return Err("trailing backslash".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => cur.get_or_insert_with(String::new).push(c),
                None => return Err("trailing backslash".into()),
            },
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = cur {
        words.push(w);
    }
    if words.is_empty() {
        return Err("no command".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_a_shell() {
        assert_eq!(split_words("rota worker run").unwrap(), ["rota", "worker", "run"]);
        assert_eq!(split_words(r#"a 'b c' "d \"e\"" f\ g ''"#).unwrap(), ["a", "b c", "d \"e\"", "f g", ""]);
        assert!(split_words("a 'b").is_err());
        assert!(split_words("   ").is_err());
    }
}
