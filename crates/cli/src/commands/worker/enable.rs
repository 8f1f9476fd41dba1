//! `rota worker enable|disable [--profile P]`: for machines that reboot. Where systemd
//! runs, writes (or removes) a user unit that runs the supervisor with the worker's saved
//! settings (`Type=notify`: ready once the worker registered) and enables it; elsewhere
//! it changes nothing, says so, and says what to do instead (exit 1).

use crate::args::ProfileArgs;
use crate::output::Out;
use anyhow::{Context, Result, anyhow, bail};
use rota_lifecycle::files;
use rota_lifecycle::paths::{Dirs, Instance, InstancePaths};
use rota_lifecycle::saved;
use rota_lifecycle::systemd;
use std::process::{Command, ExitCode};

pub(super) fn enable(args: &ProfileArgs) -> Result<ExitCode> {
    let paths = instance_paths(args)?;
    let mut notes = Vec::new();
    let meta = saved::load(&paths, &mut notes)?.ok_or_else(|| {
        anyhow!(
            "{} has no saved settings yet: run `rota worker start{}` once with the flags it needs, then enable it",
            paths.instance,
            paths.instance.selector()
        )
    })?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    if !systemd::is_booted() {
        bail!(
            "systemd is not running on this machine, so nothing was enabled. Instead, start the worker at boot \
             with cron: add `@reboot {} worker start{}` to `crontab -e`, or run `rota worker heal` from a login \
             script (it restarts workers that should run)",
            exe.display(),
            paths.instance.selector()
        );
    }
    let dir = systemd::unit_dir().context("cannot find the systemd user directory (is HOME set?)")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let unit = systemd::unit_name(&paths);
    let file = dir.join(&unit);
    files::write_atomic(&file, systemd::render_unit(&paths, &meta, &exe).as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", file.display()))?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", &unit])?;
    let mut out = Out::new();
    writeln!(out, "enabled {unit} ({}): it starts {} at your next login", file.display(), paths.instance)?;
    writeln!(out, "  at boot without a login: loginctl enable-linger {}", whoami())?;
    writeln!(
        out,
        "  to hand over the running worker now: rota worker stop && systemctl --user start {unit}"
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn disable(args: &ProfileArgs) -> Result<ExitCode> {
    let paths = instance_paths(args)?;
    let unit = systemd::unit_name(&paths);
    let file = systemd::unit_dir().map(|d| d.join(&unit));
    let mut out = Out::new();
    let Some(file) = file.filter(|f| f.exists()) else {
        writeln!(out, "{unit} is not enabled; nothing to do")?;
        return Ok(ExitCode::SUCCESS);
    };
    if systemd::is_booted() {
        systemctl(&["disable", &unit])?;
    }
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    if systemd::is_booted() {
        systemctl(&["daemon-reload"])?;
    }
    writeln!(
        out,
        "disabled {unit} (removed {}); a running worker keeps running (`rota worker stop` stops it)",
        file.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn instance_paths(args: &ProfileArgs) -> Result<InstancePaths> {
    let dirs = Dirs::from_env()?;
    Ok(dirs.instance(&Instance::profile(args.profile.as_deref())?))
}

fn systemctl(args: &[&str]) -> Result<()> {
    let out = Command::new("systemctl").arg("--user").args(args).output().context("cannot run systemctl")?;
    if !out.status.success() {
        bail!("systemctl --user {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "$USER".into())
}
