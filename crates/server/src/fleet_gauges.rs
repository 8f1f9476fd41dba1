//! The fleet-wide gauges of `/metrics` (steps ready and running and paused queues per
//! namespace and queue, workers by state, who leads): exported by the leader only, so the
//! servers of one control plane never count the fleet twice, from a snapshot this server
//! takes every [`REFRESH_EVERY`] while it leads. A scrape renders the cached snapshot and
//! never queries the store. Must not write to the store.

use crate::state::AppState;
use rota_api_types::workers::WorkerState;
use rota_store::QueueStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the leader reads the fleet from the store: two queries (queue counts, worker
/// sessions) every 5 s, whatever the scrape rate.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A snapshot older than this is not served (the loop stopped, the store is failing).
const STALE_AFTER: Duration = Duration::from_secs(20);

/// What the leader last read.
struct Snapshot {
    taken: Instant,
    queues: Vec<QueueStats>,
    workers: BTreeMap<&'static str, u64>,
    leader: (String, String),
}

/// The cached snapshot; empty while this server does not lead.
#[derive(Default)]
pub(crate) struct FleetGauges {
    snapshot: Mutex<Option<Snapshot>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl FleetGauges {
    fn set(&self, s: Option<Snapshot>) {
        if let Ok(mut g) = self.snapshot.lock() {
            *g = s;
        }
    }

    /// The gauges' text, or nothing when this server does not lead (or its snapshot is
    /// stale).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let Ok(g) = self.snapshot.lock() else { return out };
        let Some(s) = g.as_ref().filter(|s| s.taken.elapsed() < STALE_AFTER) else { return out };
        let _ = writeln!(
            out,
            "# HELP rota_queue_steps Steps per queue and state (ready includes waiting for a retry), fleet-wide; leader only.\n# TYPE rota_queue_steps gauge"
        );
        for q in &s.queues {
            let (ns, queue) = (escape(&q.namespace), escape(&q.queue));
            for (state, n) in [("ready", q.ready), ("running", q.running)] {
                let _ = writeln!(
                    out,
                    "rota_queue_steps{{namespace=\"{ns}\",queue=\"{queue}\",state=\"{state}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP rota_queue_paused 1 for a paused queue, 0 otherwise, fleet-wide; leader only.\n# TYPE rota_queue_paused gauge"
        );
        for q in &s.queues {
            let _ = writeln!(
                out,
                "rota_queue_paused{{namespace=\"{}\",queue=\"{}\"}} {}",
                escape(&q.namespace),
                escape(&q.queue),
                u8::from(q.paused)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rota_workers Worker sessions by state, fleet-wide; leader only.\n# TYPE rota_workers gauge"
        );
        for (state, n) in &s.workers {
            let _ = writeln!(out, "rota_workers{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP rota_leader 1, exported by the server that leads (sweeps leases, runs schedules).\n# TYPE rota_leader gauge"
        );
        let _ = writeln!(
            out,
            "rota_leader{{server=\"{}\",host=\"{}\"}} 1",
            escape(&s.leader.0),
            escape(&s.leader.1)
        );
        out
    }
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Active => "active",
        WorkerState::Draining => "draining",
        WorkerState::Stale => "stale",
        WorkerState::Offline => "offline",
    }
}

/// Reads the fleet while this server leads; forgets it at once when it does not. Also
/// drains the recorder's histogram buffers on the same beat.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        state.metrics.upkeep();
        match snapshot(&state).await {
            Ok(s) => state.fleet_gauges.set(s),
            Err(e) => {
                tracing::debug!(error = %e, "fleet gauges: cannot read the fleet");
                state.fleet_gauges.set(None);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

async fn snapshot(state: &AppState) -> Result<Option<Snapshot>, rota_store::StoreError> {
    if !state.leader.lead().await? {
        return Ok(None);
    }
    let queues = state.store.queue_stats(None).await?;
    let mut workers: BTreeMap<&'static str, u64> =
        [WorkerState::Active, WorkerState::Draining, WorkerState::Stale].map(|s| (state_name(s), 0)).into();
    for w in state.store.list_workers().await? {
        let s = crate::views::worker_view(&w, state.config.lease_ttl).state;
        // Offline sessions are history, not fleet.
        if s != WorkerState::Offline {
            *workers.entry(state_name(s)).or_default() += 1;
        }
    }
    Ok(Some(Snapshot {
        taken: Instant::now(),
        queues,
        workers,
        leader: (state.me.id.to_string(), state.me.host.clone()),
    }))
}
