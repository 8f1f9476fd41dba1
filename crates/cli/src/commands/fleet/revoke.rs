//! `rota worker revoke JOB... [--terminate] [--signal S] [--expires D]`: stored by the
//! server before it is broadcast; prints each job's resulting state.
//!
//! JSON: `{"results": [{"jobId", "state", "changed", "terminated"}]}`.

use super::RevokeArgs;
use crate::commands::job::Api;
use crate::output::{Out, table};
use anyhow::Result;
use rota_api_types::fleet::RevokeRequest;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, args: &RevokeArgs, json: bool) -> Result<ExitCode> {
    let req = RevokeRequest {
        jobs: args.jobs.clone(),
        terminate: args.terminate,
        signal: Some(args.signal),
        expires_ms: args.expires.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let resp = api.client.revoke(&req).await.map_err(|e| api.error(e, None))?;
    let mut out = Out::new();
    if json {
        out.json(&resp)?;
    } else {
        let mut t = table(&["JOB", "STATE", "CHANGED", "TERMINATED"]);
        for r in &resp.results {
            t.add_row(vec![
                r.job_id.to_string(),
                r.state.clone().unwrap_or_else(|| "not seen yet (revoke kept)".into()),
                r.changed.to_string(),
                r.terminated.to_string(),
            ]);
        }
        out.table(&t)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
