//! Registration: joins the server with the join token and the workspace's instance id,
//! retrying an unreachable (or failing) server with backoff and jitter until shutdown, and
//! turning a refusal (bad token, protocol mismatch, invalid registration) into
//! [`WorkerError::Refused`] (so is a server certificate it does not trust), a name held by another instance into
//! [`WorkerError::NameHeld`]. It holds no session state itself (that is `context.rs`).

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::error::WorkerError;
use rota_api_types::worker::{NAME_HELD, RegisterRequest, RegisterResponse};
use rota_client::ClientError;
use rota_domain::PROTOCOL_VERSION;
use tokio_util::sync::CancellationToken;

/// Optional protocol features this worker implements.
const CAPABILITIES: &[&str] = &["logs-batch", "complete-batch", "control", "self-fencing", "memory-limit"];

fn request(ctx: &Ctx, replace: bool) -> RegisterRequest {
    let c = &ctx.config;
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        protocol_minor: rota_domain::PROTOCOL_MINOR,
        name: c.name.clone(),
        namespace: c.namespace.clone(),
        host: c.host.clone(),
        profile: c.profile.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        queues: c.queues.clone(),
        tags: ctx.registered_tags(),
        concurrency: c.concurrency,
        capabilities: CAPABILITIES.iter().map(|s| s.to_string()).collect(),
        pid: Some(std::process::id()),
        instance_id: ctx.instance_id.clone(),
        replace,
    }
}

/// Registers, retrying until it works, is refused, or `shutdown` (→ `Ok(None)`). With
/// `replace`, a live session of another instance holding the name is superseded.
pub(crate) async fn register(
    ctx: &Ctx,
    shutdown: &CancellationToken,
    replace: bool,
) -> Result<Option<RegisterResponse>, WorkerError> {
    let req = request(ctx, replace);
    let mut backoff = Backoff::server();
    let mut failures = 0u32;
    loop {
        let res = tokio::select! {
            r = ctx.client.register(&ctx.config.join_token, &req) => r,
            () = shutdown.cancelled() => return Ok(None),
        };
        // With several servers: the one that answered (or was tried) last.
        let server = ctx.client.base_url().to_string();
        let e = match res {
            Ok(resp) => {
                if failures > 0 {
                    tracing::info!(%server, "server reachable again after {failures} failed attempts");
                }
                return Ok(Some(resp));
            }
            Err(e) => e,
        };
        // Retrying cannot help until the certificate or what this worker trusts changes.
        if let Some(problem) = e.certificate_problem() {
            let message = format!("{server}: {problem}; pass --ca-cert FILE or set ROTA_CA_CERT");
            return Err(WorkerError::Refused { message });
        }
        match &e {
            ClientError::Http { status: 409, code, message, .. } if code == NAME_HELD => {
                return Err(WorkerError::NameHeld { message: message.clone() });
            }
            ClientError::Http { status, code, message, .. } if !e.is_transient() => {
                let message = match status {
                    401 => format!("{server} did not accept the join token ({status} {code}: {message})"),
                    403 => format!("{server} refused the token for workers ({status} {code}: {message})"),
                    404 => format!(
                        "{server} does not serve the rota worker protocol ({status} on /worker/register)"
                    ),
                    _ => format!("{message} ({status} {code})"),
                };
                return Err(WorkerError::Refused { message });
            }
            ClientError::InvalidServer(m) => return Err(WorkerError::InvalidConfig(m.clone())),
            _ => {}
        }
        failures += 1;
        if failures.is_power_of_two() {
            tracing::warn!(%server, failures, "cannot register yet: {e}; retrying with backoff");
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}
