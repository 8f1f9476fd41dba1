//! Running steps as another user (`rota worker run --run-as USER[:GROUP]`, for a worker
//! running as root): the user looked up in `/etc/passwd` and `/etc/group` (a small parser,
//! no NSS), whether it can reach the workspace, and the spawner helper's own drop to it at
//! its start. It must not spawn, chown or write anything itself.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The environment variable that tells a spawner helper whom to become: `UID:GID:G1,G2`.
pub(crate) const HELPER_ENV: &str = "ROTA_SPAWNER_RUN_AS";

/// Who steps run as: a user, its group and supplementary groups, and its home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group steps run with: the user's primary group, or the one given.
    pub gid: u32,
    /// Supplementary groups: every group listing the user, and its primary group.
    pub groups: Vec<u32>,
    /// Its home directory (`HOME` of steps).
    pub home: PathBuf,
}

/// Why `--run-as` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// The user or group is unknown, or the databases cannot be read.
    #[error("--run-as {spec}: {why}")]
    Lookup {
        /// As given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// The worker is not root, so it cannot change to another user.
    #[error(
        "--run-as {spec}: this worker runs as uid {uid}, not root: only root can run steps as another user \
         (run the worker as root, or drop --run-as to run steps as this user)"
    )]
    NotRoot {
        /// As given.
        spec: String,
        /// The worker's effective uid.
        uid: u32,
    },
}

impl RunAs {
    /// Looks `spec` (`USER[:GROUP]`, names or numbers) up in `/etc/passwd` and
    /// `/etc/group`, and refuses it unless this process is root.
    pub fn resolve(spec: &str) -> Result<Self, RunAsError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|e| RunAsError::Lookup {
                spec: spec.into(),
                why: format!("cannot read {path}: {e}"),
            })
        };
        let run_as = resolve_in(spec, &read("/etc/passwd")?, &read("/etc/group")?)?;
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Err(RunAsError::NotRoot { spec: spec.into(), uid });
        }
        Ok(run_as)
    }

    /// The variable a spawner helper becomes this user by ([`Spawner::start`]'s `envs`).
    ///
    /// [`Spawner::start`]: crate::Spawner::start
    pub fn helper_env(&self) -> (&'static str, OsString) {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        (HELPER_ENV, format!("{}:{}:{}", self.uid, self.gid, groups.join(",")).into())
    }

    /// Whether this user can reach `dir` (search every ancestor, and write `dir` once it is
    /// theirs): by mode bits, which is what a root worker can check for someone else.
    pub(crate) fn check_reach(&self, dir: &Path) -> Result<(), String> {
        let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
        ancestors.reverse();
        for a in ancestors {
            let meta = match std::fs::metadata(a) {
                Ok(m) => m,
                // Created later by the worker (as root, 0755 by the umask): reachable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(format!("cannot inspect {}: {e}", a.display())),
            };
            if !self.may(&meta, 0o1) {
                return Err(format!(
                    "steps run as {} (uid {}) cannot reach the workspace {}: {} (mode {:04o}, owner {}:{}) \
                     is not searchable by that user; choose a workspace under a directory it can reach \
                     (--workspace) or give it access (chmod o+x)",
                    self.user,
                    self.uid,
                    dir.display(),
                    a.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
        Ok(())
    }

    /// Whether the mode bits `want` (1 = x, 2 = w, 4 = r) of `meta` apply to this user.
    fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid || self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// `spec` looked up in the texts of `/etc/passwd` and `/etc/group`.
fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<RunAs, RunAsError> {
    let bad = |why: String| RunAsError::Lookup { spec: spec.into(), why };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part.is_some_and(str::is_empty) {
        return Err(bad("expected USER or USER:GROUP".into()));
    }
    // name:password:uid:gid:gecos:home:shell
    let users: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 7).collect();
    let entry = users
        .iter()
        .find(|f| f[0] == user_part)
        .or_else(|| users.iter().find(|f| user_part.parse::<u32>().is_ok() && f[2] == user_part))
        .ok_or_else(|| bad(format!("no user {user_part} in /etc/passwd")))?;
    let number = |text: &str, what: &str| {
        text.parse::<u32>()
            .map_err(|_| bad(format!("/etc/passwd: {what} '{text}' of {} is not a number", entry[0])))
    };
    let (name, uid, primary) = (entry[0].to_string(), number(entry[2], "uid")?, number(entry[3], "gid")?);
    // name:password:gid:member,member
    let groups: Vec<Vec<&str>> =
        group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    let gid = match group_part {
        None => primary,
        Some(g) => match groups.iter().find(|f| f[0] == g) {
            Some(f) => {
                f[2].parse::<u32>().map_err(|_| bad(format!("/etc/group: gid of {g} is not a number")))?
            }
            None => g.parse::<u32>().map_err(|_| bad(format!("no group {g} in /etc/group")))?,
        },
    };
    let mut supplementary = vec![primary];
    for f in &groups {
        if f[3].split(',').any(|m| m.trim() == name)
            && let Ok(g) = f[2].parse::<u32>()
            && !supplementary.contains(&g)
        {
            supplementary.push(g);
        }
    }
    if uid == 0 {
        return Err(bad("that is root: steps would run with the worker's own privileges".into()));
    }
    Ok(RunAs { user: name, uid, gid, groups: supplementary, home: PathBuf::from(entry[5]) })
}

/// In a spawner helper, before anything else and while it is single-threaded (the
/// rustix calls below change the calling thread only): become the user [`HELPER_ENV`]
/// names, if any — supplementary groups, then group, then user, the only order in which
/// each step is still permitted. Its death signal is armed after this (a credential change
/// clears it). An error means the helper must not serve.
pub(crate) fn drop_privileges_from_env() -> std::io::Result<()> {
    let Some(value) = std::env::var_os(HELPER_ENV) else { return Ok(()) };
    let bad = || std::io::Error::other(format!("{HELPER_ENV}: expected UID:GID:G1,G2, got {value:?}"));
    let text = value.to_str().ok_or_else(bad)?;
    let mut parts = text.splitn(3, ':');
    let uid: u32 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let gid: u32 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let groups = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map(rustix::process::Gid::from_raw).map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    rustix::thread::set_thread_groups(&groups)?;
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(gid))?;
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid))?;
    let (ruid, euid) = (rustix::process::getuid().as_raw(), rustix::process::geteuid().as_raw());
    if ruid != uid || euid != uid {
        return Err(std::io::Error::other(format!("still uid {ruid}/{euid} after changing to {uid}")));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nann:x:1000:1000::/home/ann:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nann:x:1000:\ndocker:x:999:bob,ann\nstaff:x:50:\n";

    #[test]
    fn users_groups_and_homes_are_looked_up() {
        let ann = resolve_in("ann", PASSWD, GROUP).unwrap();
        assert_eq!(
            (ann.uid, ann.gid, ann.groups.clone(), ann.home.clone()),
            (1000, 1000, vec![1000, 999], "/home/ann".into())
        );
        assert_eq!(resolve_in("1000:staff", PASSWD, GROUP).unwrap().gid, 50);
        assert_eq!(resolve_in("nobody", PASSWD, GROUP).unwrap().uid, 65534);
        for (spec, why) in [
            ("zed", "no user zed"),
            ("ann:nope", "no group nope"),
            ("root", "that is root"),
            (":x", "expected"),
        ] {
            let e = resolve_in(spec, PASSWD, GROUP).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
