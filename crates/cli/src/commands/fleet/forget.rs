//! `rota worker forget NAME [--block]` and `rota worker unblock NAME`: cutting a worker's
//! credential off on every server, and letting a blocked name back in.
//!
//! JSON: forget `{"namespace", "name", "sessions", "lostAttempts", "blocked"}`; unblock
//! `{"name", "wasBlocked"}`.

use crate::args::ForgetArgs;
use crate::commands::job::Api;
use crate::output::Out;
use anyhow::Result;
use std::process::ExitCode;

pub(crate) async fn forget(api: &Api, args: &ForgetArgs, json: bool) -> Result<ExitCode> {
    let reply = api.client.forget_worker(&args.name, args.block).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if json {
        out.json(&reply)?;
    } else {
        match reply.sessions.len() {
            0 => writeln!(out, "worker {} had no live session", reply.name)?,
            n => writeln!(
                out,
                "worker {} forgotten: {n} session{} ended, {} running attempt{} lost (retried where their policy says)",
                reply.name,
                if n == 1 { "" } else { "s" },
                reply.lost_attempts,
                if reply.lost_attempts == 1 { "" } else { "s" },
            )?,
        }
        if reply.blocked {
            writeln!(out, "name {} blocked: `rota worker unblock {0}` lets it register again", reply.name)?;
        } else {
            writeln!(out, "it may register again with the join token (use --block to refuse it)")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn unblock(api: &Api, name: &str, json: bool) -> Result<ExitCode> {
    let reply = api.client.unblock_worker(name).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if json {
        out.json(&reply)?;
    } else if reply.was_blocked {
        writeln!(out, "name {} unblocked: it may register again", reply.name)?;
    } else {
        writeln!(out, "name {} was not blocked", reply.name)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
