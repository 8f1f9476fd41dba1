//! `rota token rotate admin|join [--grace D]`: a new token for the whole control plane,
//! made and stored by the server (every server reloads it; no restart). The new token goes
//! where the old one was found: the local token file is rewritten atomically (0600);
//! otherwise it is printed on stdout once. It is never logged.

use crate::args::{GlobalArgs, TokenCommand, TokenKind, TokenRotateArgs};
use crate::commands::job::Api;
use crate::config::Paths;
use crate::failure::usage;
use crate::output::{Out, note};
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::time::Duration;

/// The server's longest grace (`routes/tokens.rs`), checked here too so that a typo is a
/// usage error before anything is rotated.
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) async fn run(global: &GlobalArgs, command: TokenCommand, paths: &Paths) -> Result<ExitCode> {
    match command {
        TokenCommand::Rotate(args) => rotate(global, &args, paths).await,
    }
}

async fn rotate(global: &GlobalArgs, args: &TokenRotateArgs, paths: &Paths) -> Result<ExitCode> {
    let api = Api::connect(global, paths)?;
    let (kind, file) = match args.kind {
        TokenKind::Admin => ("admin", paths.admin_token()),
        TokenKind::Join => ("join", paths.join_token()),
    };
    // The file is rewritten only when this command's token came from it (admin) or it is
    // this host's join token file (a server host); a token given on the command line or in
    // the environment cannot be rewritten here.
    let rewrite = match args.kind {
        TokenKind::Admin => global.token.is_none() && file.exists(),
        TokenKind::Join => file.exists(),
    };
    if args.grace.is_some_and(|g| g > MAX_GRACE) {
        return Err(usage("--grace: at most 7d (a week covers hosts that were off over a weekend)"));
    }
    let grace_ms = args.grace.map_or(0, |g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
    let reply = api.client.rotate_token(kind, grace_ms).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    let until = reply.grace_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if rewrite {
        if let Err(e) =
            rota_lifecycle::files::write_atomic(&file, format!("{}\n", reply.token).as_bytes(), 0o600)
        {
            // The server holds the new token now: losing it would lock everyone out.
            writeln!(out, "{}", reply.token)?;
            out.flush()?;
            return Err(e).with_context(|| {
                format!("the {kind} token was rotated but {} could not be written: the new token is printed above", file.display())
            });
        }
        note(format_args!("{kind} token rotated: {} rewritten (mode 0600)", file.display()));
    } else if global.json {
        out.json(&reply)?;
    } else {
        writeln!(out, "{}", reply.token)?;
        note(format_args!(
            "{kind} token rotated: the new token is printed above, once (the server keeps only its hash)"
        ));
    }
    match (&until, args.kind) {
        (Some(t), TokenKind::Join) => note(format_args!(
            "the old join token registers until {t}; linked supervisors receive the new one meanwhile"
        )),
        (Some(t), TokenKind::Admin) => note(format_args!("the old admin token is accepted until {t}")),
        (None, _) => note(format_args!("the old {kind} token is refused from now on")),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
