//! `rota worker revoke [JOB...] [--key K...] [--terminate] [--signal S] [--expires D]`:
//! stored by the server before it is broadcast; prints each job's (and key's) resulting state.
//!
//! JSON: `{"results": [{"jobId", "state", "changed", "terminated"}], "keys": [{"key", "job"}]}`.

use super::RevokeArgs;
use crate::commands::job::Api;
use crate::output::{Out, table};
use anyhow::Result;
use rota_api_types::fleet::RevokeRequest;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, args: &RevokeArgs, json: bool) -> Result<ExitCode> {
    let req = RevokeRequest {
        jobs: args.jobs.clone(),
        keys: args.keys.clone(),
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
        let row = |r: &rota_api_types::fleet::RevokeResult| {
            vec![
                r.job_id.to_string(),
                r.state.clone().unwrap_or_else(|| "unknown".into()),
                r.changed.to_string(),
                r.terminated.to_string(),
            ]
        };
        for r in &resp.results {
            t.add_row(row(r));
        }
        for k in &resp.keys {
            match &k.job {
                Some(r) => t.add_row(row(r)),
                None => t.add_row(vec![
                    format!("key {}", k.key),
                    "no job yet (the job submitted with it will be revoked)".into(),
                    "false".into(),
                    "0".into(),
                ]),
            };
        }
        out.table(&t)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
