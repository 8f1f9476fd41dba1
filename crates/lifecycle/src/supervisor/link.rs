//! The supervisor's link to the server: a light session of its own, keyed by host and
//! instance key (never the worker's name, so it never clashes with its worker's
//! registration), authenticated with the join token read from its 0600 file (never argv
//! or the environment). It reports the local state on change and every few seconds, and
//! hands the heals the server sends to the supervisor, and saves a rotated join token the
//! server hands over (during the old token's grace). It never starts or stops a process
//! itself; a server that is away costs nothing but a retry with backoff.

use super::super::files::Loaded;
use super::super::paths::InstancePaths;
use super::super::state::{self, Phase, RuntimeState};
use rota_api_types::supervisors::{
    HealPhase, HealProgress, LinkRequest, MAX_REPORTED_ERROR, SupervisorReport, SupervisorState,
};
use rota_worker::backoff::Backoff;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

/// How long one link call waits for a command.
const WAIT: Duration = Duration::from_secs(3);

/// What the CLI tells the supervisor about its link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The join token's file (0600), read on every call so a rotation is seen.
    pub token_file: PathBuf,
    /// This host's name, as the worker reports it.
    pub host: String,
    /// The worker's `--ca-cert`, trusted by the link as by the worker.
    pub ca_cert: Option<PathBuf>,
}

/// A client for `server` trusting what the worker trusts.
fn client(server: &str, cfg: &LinkConfig) -> Result<rota_client::WorkerClient, rota_client::ClientError> {
    let ca = match &cfg.ca_cert {
        Some(f) => rota_client::CaCerts::from_pem_file(f)?,
        None => rota_client::CaCerts::default(),
    };
    rota_client::WorkerClient::trusting(server, &ca)
}

/// What the supervisor and its link share.
#[derive(Clone, Default)]
pub(crate) struct Shared {
    /// The heal in progress (or last done), reported with every call.
    pub(crate) heal: Arc<Mutex<Option<HealProgress>>>,
    /// Woken when the local state changed: the link reports at once.
    pub(crate) changed: Arc<Notify>,
}

impl Shared {
    pub(crate) fn set_heal(&self, id: Uuid, phase: HealPhase, pid: Option<u32>, error: Option<String>) {
        *self.heal.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(HealProgress { id, phase, pid, error });
        self.changed.notify_one();
    }

    /// The heal being done, if one is `starting`.
    pub(crate) fn healing(&self) -> Option<Uuid> {
        self.heal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|h| h.phase == HealPhase::Starting)
            .map(|h| h.id)
    }
}

fn bounded(text: Option<String>) -> Option<String> {
    text.map(|t| {
        if t.len() <= MAX_REPORTED_ERROR {
            return t;
        }
        let mut cut = t.len() - MAX_REPORTED_ERROR;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        format!("…{}", &t[cut..])
    })
}

fn report(
    cfg: &LinkConfig,
    key: &str,
    namespace: &str,
    st: &RuntimeState,
    heal: Option<HealProgress>,
) -> SupervisorReport {
    let state = match st.phase {
        Phase::Starting => SupervisorState::Starting,
        Phase::Running => SupervisorState::Running,
        Phase::Backoff => SupervisorState::Restarting,
        Phase::Failed => SupervisorState::Failed,
        Phase::Stopping | Phase::Stopped => SupervisorState::Stopped,
    };
    let last_exit = st.last_exit.as_ref().map(|e| match (e.code, e.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".to_string(),
    });
    SupervisorReport {
        host: cfg.host.clone(),
        key: key.to_string(),
        instance_id: st.instance_id.clone().unwrap_or_default(),
        namespace: namespace.to_string(),
        worker: st.worker_name.clone(),
        state,
        last_exit,
        last_error: bounded(st.failed_reason.clone().or_else(|| st.last_error.clone())),
        restarts: st.restarts,
        heal,
    }
}

/// Runs the link until the supervisor ends (the task is aborted then). Heals go to `heals`.
pub(crate) async fn run(
    cfg: LinkConfig,
    server: String,
    paths: InstancePaths,
    namespace: String,
    shared: Shared,
    heals: mpsc::Sender<Uuid>,
) {
    let client = match client(&server, &cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%server, "no supervisor link: {e}");
            return;
        }
    };
    let backoff = Backoff::server();
    let mut failures = 0u32;
    loop {
        let st = match state::load(&paths) {
            Ok(Loaded::Found(s)) => s,
            _ => RuntimeState::default(),
        };
        let heal = shared.heal.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let req = LinkRequest {
            report: report(&cfg, &paths.key, &namespace, &st, heal),
            wait_ms: u64::try_from(WAIT.as_millis()).unwrap_or(3000),
        };
        let token = match std::fs::read_to_string(&cfg.token_file) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        "supervisor link: cannot read the join token {}: {e}",
                        cfg.token_file.display()
                    );
                }
                tokio::time::sleep(backoff.delay_after(failures)).await;
                continue;
            }
        };
        let call = client.supervisor_link(&token, &req);
        let outcome = tokio::select! {
            r = call => Some(r),
            // The local state changed: report it now (the call in flight is dropped).
            () = shared.changed.notified() => None,
        };
        match outcome {
            None => {}
            Some(Ok(reply)) => {
                if failures > 0 {
                    tracing::info!(%server, "supervisor link up again");
                }
                failures = 0;
                if let Some(new) = reply.join_token.as_deref().map(str::trim)
                    && !new.is_empty()
                    && new != token
                {
                    save_join_token(&cfg.token_file, new);
                }
                if let Some(id) = reply.heal {
                    take_heal(id, &st, &shared, &heals).await;
                }
            }
            Some(Err(e)) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(%server, failures, "supervisor link: {e}");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.delay_after(failures)) => {}
                    () = shared.changed.notified() => {}
                }
            }
        }
    }
}

/// The join token was rotated and the server handed this link the new one: it replaces the
/// token file (atomically, 0600), so the worker's next registration (a crash-restart, a
/// `rota worker restart`, a heal) uses it once the old one's grace ends. The token is
/// never logged.
fn save_join_token(file: &std::path::Path, token: &str) {
    match crate::files::write_atomic(file, format!("{token}\n").as_bytes(), 0o600) {
        Ok(()) => tracing::info!("the join token was rotated: saved the new one to {}", file.display()),
        Err(e) => tracing::error!(
            "the join token was rotated but the new one could not be saved to {}: {e}; the worker \
             cannot register again once the old token's grace ends",
            file.display()
        ),
    }
}

/// One last report as the supervisor ends (stopped, or failed before its worker ever
/// registered), so the server does not show it running until it goes stale. Best effort,
/// bounded by a second.
pub(crate) async fn last_report(
    cfg: &LinkConfig,
    server: &str,
    paths: &InstancePaths,
    namespace: &str,
    shared: &Shared,
) {
    let (Ok(client), Ok(token)) = (client(server, cfg), std::fs::read_to_string(&cfg.token_file)) else {
        return;
    };
    let st = match state::load(paths) {
        Ok(Loaded::Found(s)) => s,
        _ => return,
    };
    let heal = shared.heal.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let req = LinkRequest { report: report(cfg, &paths.key, namespace, &st, heal), wait_ms: 0 };
    let _ = tokio::time::timeout(Duration::from_secs(1), client.supervisor_link(token.trim(), &req)).await;
}

/// A heal the server sent: done once (a repeated hand-over of the same id is ignored); a
/// supervisor that is not `failed` has nothing to heal and says so at once.
async fn take_heal(id: Uuid, st: &RuntimeState, shared: &Shared, heals: &mpsc::Sender<Uuid>) {
    let known =
        shared.heal.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|h| h.id == id);
    if known {
        return;
    }
    match st.phase {
        Phase::Failed => {
            tracing::info!(heal = %id, "heal from the server: resetting the failed state and starting the worker");
            shared.set_heal(id, HealPhase::Starting, None, None);
            if heals.send(id).await.is_err() {
                shared.set_heal(id, HealPhase::Failed, None, Some("the supervisor is stopping".into()));
            }
        }
        Phase::Running => {
            let pid = st.worker.map(|w| w.pid.unsigned_abs());
            shared.set_heal(id, HealPhase::Healed, pid, None);
        }
        other => shared.set_heal(
            id,
            HealPhase::Failed,
            None,
            Some(format!("nothing to heal: the worker is {other:?}").to_lowercase()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_keep_their_end() {
        let long = "x".repeat(MAX_REPORTED_ERROR) + "the end";
        let b = bounded(Some(long)).unwrap_or_default();
        assert!(b.ends_with("the end") && b.starts_with('…'), "{b}");
        assert!(b.len() <= MAX_REPORTED_ERROR + 3);
        assert_eq!(bounded(Some("short".into())), Some("short".into()));
    }
}
