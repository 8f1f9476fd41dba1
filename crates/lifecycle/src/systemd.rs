//! systemd, where it runs: the user unit `rota worker enable` writes (`Type=notify`, the
//! supervisor as its main process), `sd_notify` readiness from the supervisor once its
//! worker registered, and the check for a systemd user manager. Without systemd nothing
//! here is used; no crate, just a datagram to `$NOTIFY_SOCKET`.

use super::paths::InstancePaths;
use crate::saved::Saved;
use std::path::{Path, PathBuf};

/// The unit's file name: `rota-worker.service`, `rota-worker-profile-ci.service`, ...
pub fn unit_name(paths: &InstancePaths) -> String {
    match paths.key.as_str() {
        "default" => "rota-worker.service".into(),
        "server" => "rota-server.service".into(),
        key => format!("rota-worker-{key}.service"),
    }
}

/// `$XDG_CONFIG_HOME/systemd/user` (else `~/.config/systemd/user`).
pub fn unit_dir() -> Option<PathBuf> {
    let abs = |v: &str| std::env::var_os(v).map(PathBuf::from).filter(|p| p.is_absolute());
    let config = abs("XDG_CONFIG_HOME").or_else(|| abs("HOME").map(|h| h.join(".config")))?;
    Some(config.join("systemd").join("user"))
}

/// True when this machine runs systemd (`/run/systemd/system`, as `sd_booted` checks).
pub fn is_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unit text: the supervisor in the foreground of the unit, its log where `start`
/// would put it, and the XDG directories this command ran with (so the unit finds the
/// same settings).
pub fn render_unit(paths: &InstancePaths, meta: &Saved, exe: &Path) -> String {
    let mut env = String::new();
    for var in ["XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "ROTA_LOG"] {
        if let Ok(v) = std::env::var(var) {
            env.push_str(&format!("Environment=\"{var}={}\"\n", escape(&v)));
        }
    }
    let what = meta.what();
    format!(
        "# Written by `rota {what} enable`; `rota worker disable` removes it.\n\
         [Unit]\n\
         Description=rota background {what} ({key})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         ExecStart={exe} worker supervise --key {key}\n\
         {env}\
         StandardOutput=append:{log}\n\
         StandardError=append:{log}\n\
         # The supervisor restarts its worker itself; systemd restarts the supervisor.\n\
         Restart=on-failure\n\
         TimeoutStartSec=60\n\
         TimeoutStopSec=60\n\
         KillMode=mixed\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        key = paths.key,
        exe = escape(&exe.display().to_string()),
        log = escape(&meta.log_path.display().to_string()),
    )
}

/// systemd unit-file quoting: `%` doubles, `\` and `"` are escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%")
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`, if set. Failures are logged only:
/// readiness for systemd must never stop the worker.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let socket = socket.to_string_lossy().into_owned();
    if let Err(e) = notify_to(&socket, state) {
        tracing::warn!("cannot notify systemd ({socket}): {e}");
    }
}

/// Sends `state` to the notify socket `socket` (a path, or `@name` for an abstract one).
fn notify_to(socket: &str, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{Dirs, Instance};

    #[test]
    fn units_are_named_and_rendered() {
        let dirs = Dirs { state: "/s".into(), run: "/r".into() };
        let p = dirs.instance(&Instance::profile(None).unwrap());
        assert_eq!(unit_name(&p), "rota-worker.service");
        assert_eq!(
            unit_name(&dirs.instance(&Instance::profile(Some("ci")).unwrap())),
            "rota-worker-profile-ci.service"
        );
        let meta = Saved::fresh(&p, "http://h:1".into());
        let unit = render_unit(&p, &meta, Path::new("/opt/rota 1%/rota"));
        assert!(unit.contains("Type=notify\n"), "{unit}");
        assert!(unit.contains("ExecStart=/opt/rota 1%%/rota worker supervise --key default\n"), "{unit}");
        assert!(unit.contains("StandardError=append:/s/default.log\n"), "{unit}");
        assert!(unit.contains("WantedBy=default.target"), "{unit}");
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        notify_to(&path.display().to_string(), "READY=1").unwrap();
        let name = format!("rota-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        notify_to(&format!("@{name}"), "STATUS=x").unwrap();
        let mut buf = [0u8; 16];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = by_name.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=x");
    }
}
