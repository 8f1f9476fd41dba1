//! Converging on the declared `WorkerConfig`s that apply to this worker (host-side,
//! level-triggered, after each registration before the first claim and then every few
//! seconds). When the set of configs or a generation changes, the worker stops claiming,
//! waits for its running steps to finish, removes the files of configs that no longer
//! apply, writes the files of the changed ones under its managed directory
//! (`<workspace>/.rota/config`, `$ROTA_CONFIG_DIR` for steps), runs their `setup` scripts
//! (`sh -c`, its own process group, killed at the time limit), and takes work again — or,
//! when a setup failed, stays registered but claims nothing (`Degraded`, reported to the
//! server with the exit code and the output's last lines) until a config changes. The
//! configs' `env` reaches every step (a job's own env wins). Every worker start applies
//! them anew before its first claim, so changes made while it was stopped are taken then.

use crate::context::Ctx;
use rota_api_types::worker::{ConfigQuery, ConfigResult};
use rota_domain::hostconfig::{Matched, PROJECT_TAG_PREFIX, project_tag};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The variable naming the managed directory for steps and setup scripts.
pub(crate) const CONFIG_DIR_ENV: &str = "ROTA_CONFIG_DIR";

/// Most bytes of a setup's output kept for its report (the end of it).
const TAIL_BYTES: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the worker applied, and what it tells steps and the server.
#[derive(Debug, Default)]
pub(crate) struct HostState {
    /// Config name → the generation applied (or tried: a failed setup is not run again
    /// until its config changes).
    applied: Mutex<BTreeMap<String, i64>>,
    /// Config name → files it wrote (to remove when it no longer applies).
    written: Mutex<BTreeMap<String, Vec<PathBuf>>>,
    /// The configs' variables, in application order.
    env: Mutex<Vec<(String, String)>>,
    /// The values of those variables and files a secret filled in (masked in step output).
    secrets: Mutex<Vec<Vec<u8>>>,
    /// Why the worker claims nothing (a setup failed), if it does not.
    degraded: Mutex<Option<String>>,
    /// Outcomes not yet reported.
    pending: Mutex<Vec<ConfigResult>>,
    /// Project name → the directory its jobs run in on this host.
    projects: Mutex<BTreeMap<String, String>>,
}

impl HostState {
    /// Variables the configs give steps.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        lock(&self.env).clone()
    }

    /// The values the configs gave from secrets: masked in every step's output.
    pub(crate) fn secret_values(&self) -> Vec<Vec<u8>> {
        lock(&self.secrets).clone()
    }

    /// The directory project `name` lives in on this host, if mapped.
    pub(crate) fn project_dir(&self, name: &str) -> Option<PathBuf> {
        lock(&self.projects).get(name).map(PathBuf::from)
    }

    /// Why the worker claims nothing, if it does not.
    pub(crate) fn degraded(&self) -> Option<String> {
        lock(&self.degraded).clone()
    }

    /// `name@generation` of every config applied.
    pub(crate) fn applied(&self) -> Vec<String> {
        lock(&self.applied).iter().map(|(n, g)| format!("{n}@{g}")).collect()
    }
}

/// The managed directory of a worker with workspace `ws`.
pub(crate) fn managed_dir(ws: &Path) -> PathBuf {
    ws.join(".rota").join("config")
}

/// The configs that apply now (reporting the outcomes not yet reported); `None` when the
/// server could not be asked (an older server, or none reachable): nothing changes then.
pub(crate) async fn fetch(ctx: &Ctx) -> Option<Vec<Matched>> {
    query(ctx).await
}

/// Applies what changed in `configs`, then reports how that went at once (the server
/// records it on the configs).
pub(crate) async fn converge(ctx: &Ctx, configs: &[Matched]) {
    if apply_needed(ctx, configs) {
        apply(ctx, configs).await;
        let _ = query(ctx).await;
    }
}

/// The tags a worker mapping `configs`' projects carries (`project:NAME`), sorted: how a
/// job naming a project reaches only workers that map it.
pub(crate) fn project_tags(configs: &[Matched]) -> Vec<String> {
    let mut tags: Vec<String> = projects(configs).keys().map(|p| project_tag(p)).collect();
    tags.sort();
    tags
}

/// [`project_tags`] of `configs`, or, when they could not be fetched, the project tags
/// already registered (a failed query changes nothing).
pub(crate) fn project_tags_or_kept(ctx: &Ctx, configs: Option<&[Matched]>) -> Vec<String> {
    match configs {
        Some(c) => project_tags(c),
        None => ctx.registered_tags().into_iter().filter(|t| t.starts_with(PROJECT_TAG_PREFIX)).collect(),
    }
}

/// Project name → directory, over every config (a later config, by name, wins).
fn projects(configs: &[Matched]) -> BTreeMap<String, String> {
    configs.iter().flat_map(|c| c.spec.projects.iter().map(|(k, v)| (k.clone(), v.clone()))).collect()
}

fn apply_needed(ctx: &Ctx, configs: &[Matched]) -> bool {
    let desired: BTreeMap<String, i64> = configs.iter().map(|c| (c.name.clone(), c.generation)).collect();
    if lock(&ctx.host.written).is_empty() {
        *lock(&ctx.host.written) = read_ledger(&ledger_path(&ctx.config.workspace));
    }
    let stale = lock(&ctx.host.written).keys().any(|n| !desired.contains_key(n));
    *lock(&ctx.host.applied) != desired || stale
}

/// One query carrying the outcomes not yet reported; `None` if it failed.
async fn query(ctx: &Ctx) -> Option<Vec<Matched>> {
    let results = std::mem::take(&mut *lock(&ctx.host.pending));
    let query = ConfigQuery {
        name: ctx.config.name.clone(),
        host: ctx.config.host.clone(),
        tags: ctx.config.tags.clone(),
        results: results.clone(),
    };
    match ctx.client.configs(&query).await {
        Ok(r) => Some(r.configs),
        Err(e) => {
            // 404: a server of a release without configs; unreachable: asked again soon.
            if e.status() == Some(404) || e.is_transient() {
                tracing::debug!("cannot ask which worker configs apply: {e}");
            } else {
                tracing::warn!("cannot ask which worker configs apply: {e}");
            }
            // Reported next time.
            lock(&ctx.host.pending).splice(0..0, results);
            None
        }
    }
}

/// Applies `configs` (in order): holds claims, waits for running steps, then files, setup.
async fn apply(ctx: &Ctx, configs: &[Matched]) {
    let applied = lock(&ctx.host.applied).clone();
    let changed: Vec<&Matched> =
        configs.iter().filter(|c| applied.get(&c.name) != Some(&c.generation)).collect();
    let gone: Vec<String> =
        applied.keys().filter(|n| !configs.iter().any(|c| &c.name == *n)).cloned().collect();
    tracing::info!(changed = ?changed.iter().map(|c| &c.name).collect::<Vec<_>>(), removed = ?gone,
        "worker configs changed: finishing running steps, then applying");
    ctx.fleet.hold(true);
    while ctx.attempts.running_count() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = managed_dir(&ctx.config.workspace);
    // Files an earlier run of this worker wrote for configs that no longer apply (it was
    // stopped when they were deleted) go too: the list is kept beside them.
    let ledger = ledger_path(&ctx.config.workspace);
    let stale: Vec<String> =
        lock(&ctx.host.written).keys().filter(|n| !configs.iter().any(|c| &c.name == *n)).cloned().collect();
    for name in gone.iter().chain(stale.iter()).chain(changed.iter().map(|c| &c.name)) {
        let files = lock(&ctx.host.written).remove(name).unwrap_or_default();
        for f in files {
            let _ = std::fs::remove_file(&f);
        }
        lock(&ctx.host.applied).remove(name);
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for c in configs {
        // The server resolved every reference for this worker: only plain values arrive.
        env.extend(c.spec.env.iter().filter_map(|(k, v)| Some((k.clone(), v.plain()?.to_string()))));
    }
    *lock(&ctx.host.env) = env.clone();
    *lock(&ctx.host.secrets) = configs
        .iter()
        .flat_map(|c| {
            let env =
                c.secret_env.iter().filter_map(|k| c.spec.env.get(k)?.plain().map(|v| v.as_bytes().to_vec()));
            let files = c
                .spec
                .files
                .iter()
                .filter(|f| c.secret_files.contains(&f.path))
                .map(|f| f.content.as_bytes().to_vec());
            env.chain(files).collect::<Vec<_>>()
        })
        .collect();
    *lock(&ctx.host.projects) = projects(configs);
    let mut degraded = None;
    for c in changed {
        let result = apply_one(ctx, &dir, c, &env).await;
        if !result.ok && degraded.is_none() {
            degraded = Some(format!("config {} generation {}: {}", c.name, c.generation, result.message));
        }
        lock(&ctx.host.applied).insert(c.name.clone(), c.generation);
        lock(&ctx.host.pending).push(result);
    }
    // A config that failed before and did not change keeps the worker degraded.
    let still = lock(&ctx.host.degraded).clone().filter(|d| {
        configs.iter().any(|c| d.starts_with(&format!("config {} generation {}:", c.name, c.generation)))
    });
    let now = degraded.or(still);
    match &now {
        Some(why) => tracing::error!("not taking work until a worker config changes: {why}"),
        None => tracing::info!("worker configs applied"),
    }
    *lock(&ctx.host.degraded) = now.clone();
    let written = lock(&ctx.host.written).clone();
    if let Err(e) = write_ledger(&ledger, &written) {
        tracing::warn!("cannot record the worker configs' files in {}: {e}", ledger.display());
    }
    ctx.fleet.hold(now.is_some());
}

/// Writes one config's files and runs its setup.
async fn apply_one(ctx: &Ctx, dir: &Path, c: &Matched, env: &[(String, String)]) -> ConfigResult {
    let fail = |message: String, exit_code: Option<i32>| ConfigResult {
        name: c.name.clone(),
        generation: c.generation,
        ok: false,
        exit_code,
        message,
    };
    let mut written = Vec::new();
    for f in &c.spec.files {
        let path = dir.join(&f.path);
        let written_as = write_file(&path, f.content.as_bytes(), f.mode_bits())
            .and_then(|()| crate::workspace::chown_to(&path, ctx.config.run_as.as_ref()));
        if let Err(e) = written_as {
            lock(&ctx.host.written).insert(c.name.clone(), written);
            return fail(format!("cannot write {}: {e}", path.display()), None);
        }
        written.push(path);
    }
    lock(&ctx.host.written).insert(c.name.clone(), written);
    if let Some(setup) = &c.spec.setup {
        let ran = match &ctx.config.run_as {
            None => run_setup(dir, &setup.run, setup.timeout(), env).await,
            Some(run_as) => run_setup_as(ctx, run_as, dir, &setup.run, setup.timeout(), env).await,
        };
        match ran {
            Ok((0, _)) => {}
            Ok((code, tail)) => return fail(tail, Some(code)),
            Err(why) => return fail(why, None),
        }
        tracing::info!(config = %c.name, generation = c.generation, "setup succeeded");
    }
    ConfigResult {
        name: c.name.clone(),
        generation: c.generation,
        ok: true,
        exit_code: None,
        message: String::new(),
    }
}

/// `<workspace>/.rota/config-files.json`: config name → files written.
fn ledger_path(ws: &Path) -> PathBuf {
    ws.join(".rota").join("config-files.json")
}

fn read_ledger(path: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write_ledger(path: &Path, written: &BTreeMap<String, Vec<PathBuf>>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(written).map_err(std::io::Error::other)?;
    write_file(path, &bytes, 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("rota-tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Runs `sh -c script` in `dir` with the configs' `env`, in its own process group; at
/// `timeout` the group is killed. Returns the exit code (128 + signal when killed) and
/// the output's last lines, or why it could not run.
async fn run_setup(
    dir: &Path,
    script: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<(i32, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| crate::spawn::DEFAULT_PATH.into()))
        .envs(std::env::var_os("HOME").map(|h| ("HOME", h)))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(CONFIG_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // posix_spawn keeps the new group (no pre_exec): the whole tree dies at the limit.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let pgid = child.id().and_then(|p| rustix::process::Pid::from_raw(i32::try_from(p).unwrap_or(0)));
    let (out, err) = (child.stdout.take(), child.stderr.take());
    finish(pgid, out, err, child.wait(), timeout).await
}

/// The id a config's setup is journaled under by the spawner (no attempt has it).
const SETUP_ATTEMPT: rota_domain::AttemptId = rota_domain::AttemptId(-1);

/// [`run_setup`] under `--run-as`: spawned by the spawner helper, which runs as that user,
/// with that user's HOME, USER and LOGNAME.
async fn run_setup_as(
    ctx: &Ctx,
    run_as: &crate::RunAs,
    dir: &Path,
    script: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<(i32, String), String> {
    use std::ffi::OsString;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = std::env::var_os("PATH").unwrap_or_else(|| crate::spawn::DEFAULT_PATH.into());
    let mut vars: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), run_as.home.clone().into_os_string()),
        ("USER".into(), run_as.user.clone().into()),
        ("LOGNAME".into(), run_as.user.clone().into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    vars.push((CONFIG_DIR_ENV.into(), dir.as_os_str().to_owned()));
    let args = vec!["-c".into(), script.into()];
    let spawned = ctx.spawner.spawn(SETUP_ATTEMPT, crate::spawn::SHELL, args, vars, dir).await;
    let mut sp = spawned.map_err(|e| format!("cannot start sh: {e}"))?;
    let pgid = rustix::process::Pid::from_raw(sp.pid);
    let result = finish(pgid, Some(sp.stdout), Some(sp.stderr), sp.exit.wait(), timeout).await;
    if !sp.exit.released() {
        let _ = ctx.spawner.release(SETUP_ATTEMPT);
    }
    result
}

/// Reads a running setup's output and waits for its exit, up to `timeout` (then its group
/// `pgid` is killed; also when this future is dropped first).
async fn finish(
    pgid: Option<rustix::process::Pid>,
    out: Option<impl tokio::io::AsyncRead + Unpin>,
    err: Option<impl tokio::io::AsyncRead + Unpin>,
    exit: impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>>,
    timeout: Duration,
) -> Result<(i32, String), String> {
    // Dropped before the setup ended (the worker stops, the limit passed): the whole group
    // goes, not only `sh` (`kill_on_drop` reaches the child alone).
    let mut guard = GroupGuard(pgid);
    // Both pipes at once: a script filling one while the other is read would block.
    let read = async {
        let (mut a, b) = tokio::join!(read_all(out), read_all(err));
        a.extend_from_slice(&b);
        a
    };
    let waited = tokio::time::timeout(timeout, async {
        let output = read.await;
        (exit.await, output)
    })
    .await;
    guard.0 = None;
    match waited {
        Ok((Ok(status), output)) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            Ok((code, tail(&output)))
        }
        Ok((Err(e), _)) => Err(format!("cannot wait for setup: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                crate::kill::kill_group(pgid);
            }
            Err(format!("setup did not finish within {}", humantime::format_duration(timeout)))
        }
    }
}

/// Kills a process group when dropped, unless disarmed (`.0 = None`).
struct GroupGuard(Option<rustix::process::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            crate::kill::kill_group(pgid);
        }
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
}

/// The last lines of `output` within [`TAIL_BYTES`].
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let start = text.len().saturating_sub(TAIL_BYTES);
    let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    text[start..].trim_end().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn setup_runs_in_the_managed_dir_with_env_and_reports_its_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let (code, out) = run_setup(
            &dir,
            "echo \"$GREETING from $(pwd)\"; echo oops >&2; exit 3",
            Duration::from_secs(10),
            &env,
        )
        .await
        .unwrap();
        assert_eq!(code, 3);
        assert!(out.contains(&format!("hi from {}", dir.display())) && out.contains("oops"), "{out}");
        let e = run_setup(&dir, "sleep 30", Duration::from_millis(200), &[]).await.unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert_eq!(tail(&vec![b'x'; 10_000]).len(), TAIL_BYTES);
    }

    /// A setup cut short from outside (the worker stops) takes its whole group with it.
    #[tokio::test]
    async fn a_dropped_setup_leaves_no_process() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        let script = "sleep 30 & echo $! > child; sleep 30";
        let cut = tokio::time::timeout(
            Duration::from_millis(500),
            run_setup(&dir, script, Duration::from_secs(60), &[]),
        );
        assert!(cut.await.is_err(), "the setup was cut short");
        let child: i32 = std::fs::read_to_string(dir.join("child")).unwrap().trim().parse().unwrap();
        let began = std::time::Instant::now();
        while crate::procfs::is_alive(child) {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the setup's background child {child} survived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
