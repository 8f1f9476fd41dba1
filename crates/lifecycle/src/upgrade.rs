//! Settings files of older releases, read into today's [`Saved`]. Version 1 (up to the
//! release that added `rota apply`) kept a worker's flags as loose fields and the server's
//! as a string map of flag values; both map onto one settings type now. Nothing here
//! writes: the caller that loaded the file rewrites it.

use crate::saved::{SETTINGS_VERSION, Saved, Supervision, TestHooks};
use rota_domain::settings::{Autoscale, ServerSettings, WorkerSettings};
use rota_domain::units::{parse_duration, parse_size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The version 1 file, field for field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1 {
    key: String,
    server: String,
    name: Option<String>,
    profile: Option<String>,
    node: Option<String>,
    #[serde(default)]
    queues: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    concurrency: Option<u32>,
    drain_timeout_ms: Option<u64>,
    workspace: Option<PathBuf>,
    bind: String,
    log_path: PathBuf,
    pidfile: PathBuf,
    join_token_file: Option<PathBuf>,
    env_file: Option<PathBuf>,
    command: Option<Vec<String>>,
    #[serde(default)]
    scaling: ScalingV1,
    supervision: Supervision,
    #[serde(default)]
    test_hooks: TestHooks,
    server_flags: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScalingV1 {
    autoscale: Option<(u32, u32)>,
    scale_up_step: Option<u32>,
    scale_down_step: Option<u32>,
    idle_period_ms: Option<u64>,
    cooldown_ms: Option<u64>,
    max_jobs: Option<u64>,
    max_memory: Option<u64>,
}

/// A version 1 file as today's settings; `Err` says what could not be carried over.
pub(crate) fn from_v1(value: serde_json::Value) -> Result<Saved, String> {
    let v: V1 = serde_json::from_value(value).map_err(|e| format!("unexpected version 1 content ({e})"))?;
    let ms = |n: Option<u64>| n.map(Duration::from_millis);
    let server_settings = v.server_flags.as_ref().map(server_from_flags).transpose()?;
    let worker = WorkerSettings {
        server: server_settings.is_none().then_some(v.server),
        name: v.name,
        profile: v.profile,
        // Version 1 predates namespaces: everything it ran was in `default`.
        namespace: None,
        queues: v.queues,
        tags: v.tags,
        concurrency: v.concurrency,
        autoscale: v.scaling.autoscale.map(|(min, max)| Autoscale { min, max }),
        scale_up_step: v.scaling.scale_up_step,
        scale_down_step: v.scaling.scale_down_step,
        idle_period: ms(v.scaling.idle_period_ms),
        cooldown: ms(v.scaling.cooldown_ms),
        max_jobs: v.scaling.max_jobs,
        max_memory: v.scaling.max_memory,
        drain_timeout: ms(v.drain_timeout_ms),
        workspace: v.workspace,
        // Version 1 predates `--run-as`.
        run_as: None,
    };
    worker.check().map_err(|e| format!("version 1 settings break a rule ({e})"))?;
    Ok(Saved {
        version: SETTINGS_VERSION,
        key: v.key,
        node: v.node,
        worker,
        server_settings,
        bind: v.bind,
        log_path: v.log_path,
        pidfile: v.pidfile,
        join_token_file: v.join_token_file,
        env_file: v.env_file,
        ca_cert: None,
        command: v.command,
        supervision: v.supervision,
        test_hooks: v.test_hooks,
    })
}

/// Version 1 kept the background server's given flags as `flag_name → value` (durations as
/// humantime text, sizes as bytes, switches as `true`).
fn server_from_flags(flags: &BTreeMap<String, String>) -> Result<ServerSettings, String> {
    let mut s = ServerSettings::default();
    let dur = |k: &str, v: &str| parse_duration(v).map_err(|e| format!("server flag {k}: {e}"));
    for (k, v) in flags {
        match k.as_str() {
            "listen" => s.listen = Some(v.clone()),
            "allow_remote" => s.allow_remote = v == "true",
            "database" => s.database = Some(v.clone()),
            "retention" => s.retention = Some(dur(k, v)?),
            "heartbeat_interval" => s.heartbeat_interval = Some(dur(k, v)?),
            "lease_ttl" => s.lease_ttl = Some(dur(k, v)?),
            "log_quota" => s.log_quota = Some(parse_size(v).map_err(|e| format!("server flag {k}: {e}"))?),
            "db_pool_size" => {
                s.db_pool_size =
                    Some(v.parse().map_err(|_| format!("server flag {k}: '{v}' is not a number"))?)
            }
            "db_statement_timeout" => s.db_statement_timeout = Some(dur(k, v)?),
            "db_pool_timeout" => s.db_pool_timeout = Some(dur(k, v)?),
            other => return Err(format!("unknown server flag '{other}' in version 1 settings")),
        }
    }
    s.check().map_err(|e| format!("version 1 server settings break a rule ({e})"))?;
    Ok(s)
}
