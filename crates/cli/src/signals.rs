//! SIGINT and SIGTERM become cancellation (for the worker SIGTERM/SIGINT/SIGQUIT choose
//! warm/soft/hard), SIGHUP reloads the server's TLS certificate: the first stop signal asks
//! for a graceful stop (drain),
//! the second for a fast one, a third ends the process at once. Only the CLI installs
//! signal handlers; the server and worker libraries just watch their tokens.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// SIGHUP reads the server's certificate and key again: new connections get the new pair,
/// open ones keep theirs; a pair that cannot be served is logged and the old one kept.
pub(crate) fn spawn_tls_reload(tls: rota_server::tls::ServerTls) -> Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(not_after) => tracing::info!(
                    file = %tls.cert_path().display(),
                    not_after = %not_after.to_rfc3339(),
                    "SIGHUP: TLS certificate reloaded; new connections get it"
                ),
                Err(e) => {
                    tracing::error!("SIGHUP: TLS certificate not reloaded, the old one is still served: {e}")
                }
            }
        }
    });
    Ok(())
}

/// The two stop signals, installed once.
pub(crate) struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// Installs the handlers. Needs a running tokio runtime.
    pub(crate) fn install() -> Result<Self> {
        let int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
        let term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
        Ok(Self { int, term })
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }

    /// The worker's signal defaults: SIGTERM → warm shutdown (drain), SIGINT → soft
    /// (TERM running steps, grace, KILL), SIGQUIT → hard (KILL them). Any second signal is
    /// the hard stop (`stop_now`), a third exits with 130. `graceful` is cancelled on the
    /// first signal whatever it was.
    pub(crate) fn spawn_worker_modes(
        mut self,
        handle: rota_worker::ShutdownHandle,
        graceful: CancellationToken,
        stop_now: CancellationToken,
    ) {
        tokio::spawn(async move {
            let Ok(mut quit) = signal(SignalKind::quit()) else {
                tracing::warn!("cannot install a SIGQUIT handler; SIGQUIT keeps its default");
                return self.spawn_escalation(graceful, stop_now);
            };
            let mode = tokio::select! {
                _ = self.term.recv() => rota_worker::ShutdownMode::Warm,
                _ = self.int.recv() => rota_worker::ShutdownMode::Soft,
                _ = quit.recv() => rota_worker::ShutdownMode::Hard,
            };
            tracing::info!(%mode, "signal: shutting down (send another signal to stop now)");
            handle.request(mode);
            graceful.cancel();
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
                _ = quit.recv() => {}
            }
            tracing::warn!("second signal: stopping now");
            stop_now.cancel();
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
                _ = quit.recv() => {}
            }
            std::process::exit(130);
        });
    }

    /// Cancels `graceful` on the first signal and `fast` on the second; a third exits the
    /// process with 130.
    pub(crate) fn spawn_escalation(mut self, graceful: CancellationToken, fast: CancellationToken) {
        tokio::spawn(async move {
            let name = self.recv().await;
            tracing::info!("{name}: stopping gracefully (send it again to stop now)");
            graceful.cancel();
            let name = self.recv().await;
            tracing::warn!("{name} again: stopping now");
            fast.cancel();
            let name = self.recv().await;
            tracing::warn!("{name} a third time: exiting");
            std::process::exit(130);
        });
    }
}
