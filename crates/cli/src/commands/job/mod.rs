//! `rota job ...`: operator calls through `rota_client`. This module connects (server URL
//! and admin token from flags, env or the local token file) and turns client errors into
//! messages that say what to do: an unreachable server, a refused token, an unknown job.

mod cancel;
pub(crate) mod list;
pub(crate) mod logs;
mod retry;
mod show;
pub(crate) mod submit;

use crate::args::{GlobalArgs, JobCommand};
use crate::config::{ClientSettings, Paths};
use crate::output;
use anyhow::{Result, anyhow};
use comfy_table::Table;
use rota_api_types::jobs::JobSummary;
use rota_client::{Client, ClientError};
use rota_domain::JobId;
use std::process::ExitCode;

pub(crate) async fn run(global: &GlobalArgs, command: JobCommand, paths: &Paths) -> Result<ExitCode> {
    let api = Api::connect(global, paths)?;
    match command {
        JobCommand::Submit(args) => submit::run(&api, &args, global.json).await,
        JobCommand::List(args) => list::run(&api, &args, global.json).await,
        JobCommand::Show { id } => show::run(&api, id, global.json).await,
        JobCommand::Logs(args) => logs::run(&api, &args).await,
        JobCommand::Cancel { id } => cancel::run(&api, id, global.json).await,
        JobCommand::Retry { id } => retry::run(&api, id, global.json).await,
    }
}

/// The client, with what error messages need to know.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) server: String,
    has_token: bool,
}

impl Api {
    pub(crate) fn connect(global: &GlobalArgs, paths: &Paths) -> Result<Self> {
        let settings = ClientSettings::from_args(global, paths)?;
        let has_token = settings.token.is_some();
        let mut client = Client::trusting(&settings.server, settings.token, &settings.ca)
            .map_err(|e| anyhow!("cannot set up a client for {}: {e}", settings.server))?
            .across_namespaces(global.all_namespaces);
        if let Some(ns) = &global.namespace {
            client = client.in_namespace(ns.clone());
        }
        Ok(Self { client, server: settings.server, has_token })
    }

    /// A client error as a message for people. `job` names the job the call was about, so
    /// a 404 reads `no job <id>`.
    pub(crate) fn error(&self, err: ClientError, job: Option<JobId>) -> anyhow::Error {
        if let Some(problem) = err.certificate_problem() {
            return crate::failure::with_code(
                crate::failure::EXIT_CONFIG,
                anyhow!("{}: {problem}; pass --ca-cert FILE or set ROTA_CA_CERT", self.server),
            );
        }
        match err {
            ClientError::Unreachable { source, .. } if !self.server.contains(',') => anyhow!(
                "cannot reach the rota server at {}: {}; is it running? (rota server / rota dev)",
                self.server,
                root_cause(&source)
            ),
            ClientError::Unreachable { .. } => anyhow!("{err}; are they running? (rota server)"),
            ClientError::Http { status: 404, .. } if job.is_some() => {
                anyhow!("no job {}", job.map(|j| j.to_string()).unwrap_or_default())
            }
            ClientError::Http { status: 401 | 403, message, .. } => {
                let hint = if self.has_token {
                    "check --token / ROTA_TOKEN against the server's admin.token file"
                } else {
                    "no admin token: pass --token, set ROTA_TOKEN, or run on the server's machine \
                     (it reads the local admin.token file)"
                };
                anyhow!("{} refused the request: {message}; {hint}", self.server)
            }
            // The server's own words, with its status: a 5xx is the server's trouble (507: its
            // disk is full), not the request's.
            ClientError::Http { status: status @ 500..=599, code, message, .. } => {
                anyhow!("the server at {} answered {status} {code}: {message}", self.server)
            }
            ClientError::Http { message, .. } => anyhow!("{message}"),
            other => anyhow!("{}: {other}", self.server),
        }
    }
}

/// The innermost cause: reqwest's own message ("error sending request") says less than
/// the I/O error under it ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The columns of `job list`, also used by `cancel` and `retry`; a NAMESPACE column first
/// when the jobs are of more than one namespace (`--all-namespaces`).
pub(crate) fn summary_table(jobs: &[JobSummary]) -> Table {
    let now = chrono::Utc::now();
    let several = jobs.iter().any(|j| j.namespace != jobs[0].namespace);
    let mut heads = vec!["ID", "NAME", "QUEUE", "STATE", "STEPS", "AGE", "REASON"];
    if several {
        heads.insert(0, "NAMESPACE");
    }
    let mut t = output::table(&heads);
    for j in jobs {
        let mut row = Vec::with_capacity(heads.len());
        if several {
            row.push(j.namespace.clone());
        }
        row.extend([
            j.id.to_string(),
            output::or_dash(j.name.as_deref()).to_string(),
            j.queue.clone(),
            j.state.clone(),
            format!("{}/{}", j.steps.succeeded, j.steps.total),
            output::age(j.created_at, now),
            output::or_dash(j.reason.as_deref()).to_string(),
        ]);
        t.add_row(row);
    }
    t
}
