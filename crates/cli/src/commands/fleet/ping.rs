//! `rota worker ping`: name, host and round trip of every worker that answered.
//!
//! JSON: `{"replies": [{"worker", "host", "rttMs"}], "noReply": [{"worker", "why"}]}`.

use super::{Target, ask, exit_for, write_silent};
use crate::commands::job::Api;
use crate::output::{Out, table};
use anyhow::Result;
use rota_api_types::fleet::FleetCommand;
use serde_json::json;
use std::process::ExitCode;

pub(crate) async fn run(api: &Api, target: &Target, json: bool) -> Result<ExitCode> {
    let resp = ask(api, FleetCommand::Ping, target).await?;
    let mut out = Out::new();
    if json {
        let replies: Vec<_> = resp
            .replies
            .iter()
            .map(|r| json!({"worker": r.worker, "host": r.host, "rttMs": r.rtt_ms}))
            .collect();
        out.json(&json!({"replies": replies, "noReply": resp.no_reply}))?;
    } else {
        let mut t = table(&["WORKER", "HOST", "RTT"]);
        for r in &resp.replies {
            t.add_row(vec![r.worker.clone(), r.host.clone(), format!("{:.2} ms", r.rtt_ms)]);
        }
        if !resp.replies.is_empty() {
            out.table(&t)?;
        }
        write_silent(&mut out, &resp)?;
    }
    out.flush()?;
    Ok(exit_for(&resp))
}
