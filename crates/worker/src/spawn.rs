//! Building a step's environment and naming its shell (the spawner helper spawns it). The
//! environment is built, never inherited: only PATH, HOME, LANG, TZ from the worker (HOME,
//! USER, LOGNAME of the `--run-as` user), the job's env and `ROTA_*`; never a token,
//! credential or their file paths.

use rota_api_types::worker::ClaimedStep;
use std::ffi::OsString;

/// PATH for steps when the worker has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The few variables steps inherit from the worker, captured once at start.
#[derive(Clone, Debug, Default)]
pub(crate) struct BaseEnv {
    path: Option<OsString>,
    home: Option<OsString>,
    lang: Option<OsString>,
    tz: Option<OsString>,
    /// `USER` and `LOGNAME` (set under `--run-as` only).
    user: Option<OsString>,
}

impl BaseEnv {
    /// Reads PATH, HOME, LANG and TZ from this process.
    pub(crate) fn from_process() -> Self {
        let get = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Self { path: get("PATH"), home: get("HOME"), lang: get("LANG"), tz: get("TZ"), user: None }
    }

    /// Steps run as `run_as`: its home, user and login name replace the worker's.
    pub(crate) fn for_user(self, run_as: Option<&crate::RunAs>) -> Self {
        match run_as {
            None => self,
            Some(r) => Self {
                home: Some(r.home.clone().into_os_string()),
                user: Some(r.user.clone().into()),
                ..self
            },
        }
    }
}

/// The environment of one attempt, in the order it is applied (later entries win).
/// `secrets` are values (join token, credential, ...) a job's env may not carry: entries
/// equal to one are dropped.
/// `host` are the worker configs' variables (a job's own env wins over them).
pub(crate) fn build_env(
    base: &BaseEnv,
    host: &[(String, String)],
    step: &ClaimedStep,
    secrets: &[&str],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(step.env.len() + 8);
    env.push(("PATH".into(), base.path.clone().unwrap_or_else(|| DEFAULT_PATH.into())));
    if let Some(home) = &base.home {
        env.push(("HOME".into(), home.clone()));
    }
    if let Some(user) = &base.user {
        env.push(("USER".into(), user.clone()));
        env.push(("LOGNAME".into(), user.clone()));
    }
    env.push(("LANG".into(), base.lang.clone().unwrap_or_else(|| "C.UTF-8".into())));
    if let Some(tz) = &base.tz {
        env.push(("TZ".into(), tz.clone()));
    }
    for (k, v) in host.iter().map(|(k, v)| (k, v)).chain(step.env.iter()) {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            tracing::warn!(key = %k, "skipping an environment variable that cannot be set");
            continue;
        }
        if secrets.iter().any(|s| !s.is_empty() && v.contains(s)) {
            tracing::warn!(key = %k, "skipping an environment variable that carries a worker secret");
            continue;
        }
        env.push((k.into(), v.into()));
    }
    env.push(("ROTA_JOB_ID".into(), step.job_id.to_string().into()));
    env.push(("ROTA_STEP".into(), step.step.clone().into()));
    env.push(("ROTA_ATTEMPT".into(), step.attempt.to_string().into()));
    env.push(("ROTA_ATTEMPT_ID".into(), step.attempt_id.to_string().into()));
    env
}

/// Whether `sh -c <script>` with this environment is within the kernel's limits
/// (`rota_domain::limits`): the reason names the variable and the limit when it is not.
pub(crate) fn check_exec_limits(step: &ClaimedStep, env: &[(OsString, OsString)]) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    rota_domain::limits::check_exec(
        "step",
        &step.run,
        env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        rota_domain::limits::MAX_SPAWN_BYTES,
    )
    .map_err(|e| format!("cannot run: {}: {}", e.field, e.message))
}

/// The shell that runs every step, as an absolute path, never a PATH lookup: the step's
/// PATH differs from the worker's, and Rust's std then cannot use posix_spawnp (it would
/// search the wrong PATH) and silently falls back to fork+exec, which profiled at ~2 ms of
/// CPU per step here and collapses further as the RSS grows. POSIX guarantees /bin/sh.
pub(crate) const SHELL: &str = "/bin/sh";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rota_domain::{AttemptId, JobId};
    use std::collections::BTreeMap;
    use tokio::io::AsyncReadExt;

    #[test]
    fn spawner_helper() {
        crate::spawner::serve_if_test_helper();
    }

    fn step(env: &[(&str, &str)]) -> ClaimedStep {
        ClaimedStep {
            secret_env: Vec::new(),
            attempt_id: AttemptId(77),
            job_id: JobId::new(),
            step: "build".into(),
            attempt: 2,
            run: "env".into(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            timeout_ms: None,
            memory_limit: None,
            keep_workspace: false,
            log_cap: 1 << 20,
            queue: None,
        }
    }

    #[tokio::test]
    async fn the_step_sees_only_the_built_environment() {
        // The test process inherits plenty (CARGO_*, RUST_*, ...); none of it may leak.
        assert!(std::env::vars_os().count() > 5);
        let s = step(&[("GREETING", "hi there"), ("LEAKY", "token=join-s3cret"), ("PATH", "/usr/bin:/bin")]);
        let base = BaseEnv::from_process();
        let env = build_env(&base, &[], &s, &["join-s3cret", "cred-abc"]);
        let dir = tempfile::tempdir().unwrap();
        let spawner = crate::spawner::start_in_test_binary("spawn::tests::spawner_helper").unwrap();
        let mut sp = spawner
            .spawn(s.attempt_id, SHELL, vec!["-c".into(), "env".into()], env, dir.path())
            .await
            .unwrap();
        let mut out = String::new();
        sp.stdout.read_to_string(&mut out).await.unwrap();
        assert!(sp.exit.wait().await.unwrap().success());
        let mut seen: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        // `sh` itself may export PWD (and dash sets nothing else); it is not inherited.
        seen.remove("PWD");
        let mut want: Vec<&str> =
            vec!["PATH", "LANG", "GREETING", "ROTA_JOB_ID", "ROTA_STEP", "ROTA_ATTEMPT", "ROTA_ATTEMPT_ID"];
        if std::env::var_os("HOME").is_some_and(|h| !h.is_empty()) {
            want.push("HOME");
        }
        if std::env::var_os("TZ").is_some_and(|h| !h.is_empty()) {
            want.push("TZ");
        }
        want.sort_unstable();
        let got: Vec<&str> = seen.keys().copied().collect();
        assert_eq!(got, want, "full env: {out}");
        assert_eq!(seen["GREETING"], "hi there");
        assert_eq!(seen["PATH"], "/usr/bin:/bin", "the job's PATH wins over the worker's");
        assert_eq!(seen["ROTA_STEP"], "build");
        assert_eq!(seen["ROTA_ATTEMPT"], "2");
        assert_eq!(seen["ROTA_ATTEMPT_ID"], "77");
        assert_eq!(seen["ROTA_JOB_ID"], s.job_id.to_string());
        assert!(!out.contains("join-s3cret"));
    }

    #[test]
    fn defaults_apply_when_the_worker_has_no_path_or_lang() {
        let env = build_env(&BaseEnv::default(), &[], &step(&[]), &[]);
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone());
        assert_eq!(get("PATH"), Some(DEFAULT_PATH.into()));
        assert_eq!(get("LANG"), Some("C.UTF-8".into()));
        assert_eq!(get("HOME"), None);
        assert_eq!(get("TZ"), None);
    }

    #[test]
    fn rota_variables_cannot_be_overridden_by_the_job() {
        let env = build_env(&BaseEnv::default(), &[], &step(&[("ROTA_STEP", "fake")]), &[]);
        let last = env.iter().rev().find(|(k, _)| k == "ROTA_STEP").map(|(_, v)| v.clone());
        assert_eq!(last, Some("build".into()));
    }
}
