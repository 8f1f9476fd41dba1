//! The control long-poll on its own task: receives commands (ping, stop, inspect, stats,
//! shutdown, revoke) as soon as they
//! are issued, carries them out, and sends the replies with the next poll. A 401 ends
//! the session. It never claims work or changes leases.

use crate::attempts::StopResult;
use crate::backoff::Backoff;
use crate::context::Ctx;
use rota_api_types::fleet::ShutdownMode;
use rota_api_types::worker::{Command, ControlReply, ControlRequest, Reply};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long each control call may be held by the server.
const CONTROL_WAIT_MS: u64 = 25_000;

/// Polls for commands until `session` is cancelled.
pub(crate) async fn control_loop(ctx: Arc<Ctx>, session: CancellationToken) {
    let mut replies: Vec<ControlReply> = Vec::new();
    let mut backoff = Backoff::server();
    loop {
        let generation = ctx.client.credential_generation();
        let req = ControlRequest { wait_ms: CONTROL_WAIT_MS, replies: std::mem::take(&mut replies) };
        let res = tokio::select! {
            r = ctx.client.control(&req) => r,
            () = session.cancelled() => return,
        };
        match res {
            Ok(resp) => {
                backoff.reset();
                let mut shutdown = None;
                for cmd in resp.commands {
                    let (reply, mode) = answer(&ctx, &cmd.command);
                    shutdown = shutdown.max(mode);
                    replies.push(ControlReply { id: cmd.id, reply });
                }
                if let Some(mode) = shutdown {
                    // Acknowledge first: once the shutdown starts, the session may end
                    // before the next poll would have carried the reply.
                    let ack = ControlRequest { wait_ms: 0, replies: std::mem::take(&mut replies) };
                    if let Err(e) = ctx.client.control(&ack).await {
                        tracing::warn!("could not acknowledge the shutdown: {e}");
                    }
                    tracing::warn!(%mode, "shutdown requested by an operator");
                    if let Some(h) = ctx.fleet.shutdown_handle() {
                        h.request(mode);
                    }
                }
            }
            Err(e) if e.is_unauthorized() => {
                ctx.session_lost(generation, &e);
                return;
            }
            Err(e) => {
                replies = req.replies;
                if !backoff.is_failing() {
                    tracing::warn!("control poll failed: {e}; retrying with backoff");
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = session.cancelled() => return,
                }
            }
        }
    }
}

/// Carries out one command; a shutdown is returned to be started after its reply is sent.
fn answer(ctx: &Ctx, command: &Command) -> (Reply, Option<crate::ShutdownMode>) {
    let reply = match command {
        Command::Ping => Reply::Pong { name: ctx.config.name.clone(), host: ctx.config.host.clone() },
        Command::Stop(order) => match ctx.apply_stop(order) {
            StopResult::Stopping | StopResult::AlreadyFinished => Reply::Done,
            StopResult::Unknown => Reply::Error {
                message: format!("attempt {} is not running on this worker", order.attempt_id),
            },
        },
        Command::Inspect => Reply::Inspect {
            in_flight: ctx.fleet.inspect(|id| ctx.attempts.pid_of(id)),
            revoked: ctx.fleet.revoked(),
        },
        Command::Stats => Reply::Stats(rota_api_types::fleet::WorkerStats {
            configs: ctx.host.applied(),
            degraded: ctx.host.degraded(),
            ..ctx.fleet.stats()
        }),
        Command::Revoke { jobs, expires_in_ms } => {
            ctx.fleet.hold_revokes(jobs, |_| expires_in_ms.map(std::time::Duration::from_millis));
            Reply::Done
        }
        Command::Shutdown { mode } => {
            if ctx.fleet.shutdown_handle().is_none() {
                return (Reply::Error { message: "this worker cannot be shut down remotely".into() }, None);
            }
            let mode = match mode {
                ShutdownMode::Warm => crate::ShutdownMode::Warm,
                ShutdownMode::Soft => crate::ShutdownMode::Soft,
                ShutdownMode::Hard => crate::ShutdownMode::Hard,
            };
            return (Reply::Done, Some(mode));
        }
    };
    (reply, None)
}
