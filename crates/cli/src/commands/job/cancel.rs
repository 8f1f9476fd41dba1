//! `rota job cancel ID`: running steps are stopped (their process groups signalled by the
//! worker), nothing more starts; prints the job's resulting summary.

use super::{Api, summary_table};
use crate::output::Out;
use anyhow::Result;
use rota_domain::JobId;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, id: JobId, json: bool) -> Result<ExitCode> {
    let job = api.client.cancel_job(id).await.map_err(|e| api.error(e, Some(id)))?;
    let mut out = Out::new();
    if json {
        out.json(&job)?;
    } else {
        out.table(&summary_table(std::slice::from_ref(&job)))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
