//! Converging on the declared `WorkerPool` in force (host-side, level-triggered): after
//! each registration (before the first claim) and then every few seconds, ask the server
//! which pool matches, lay its settings over this worker's own, and put the difference in
//! force — live where the worker can (concurrency, autoscale, recycling limits, drain
//! timeout, queues), by draining and exiting 75 (recycle) where it cannot (tags, fixed at
//! registration) when a supervisor will start it again; a foreground worker logs that a
//! restart is needed and keeps its value. A failed query changes nothing and is retried.

use crate::config::WorkerConfig;
use crate::context::Ctx;
use crate::fleet::Tuning;
use rota_api_types::worker::PoolQuery;
use rota_domain::pool::{Change, InForce, change};
use rota_domain::settings::{Autoscale, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a running worker looks again (a missed change costs at most this long).
const RESYNC: Duration = Duration::from_secs(3);

/// The worker's own settings, as a pool's are laid over them.
fn own(config: &WorkerConfig) -> WorkerSettings {
    WorkerSettings {
        queues: config.queues.clone(),
        tags: config.tags.clone(),
        concurrency: config.autoscale.is_none().then_some(config.concurrency),
        autoscale: config.autoscale.map(|(min, max)| Autoscale { min, max }),
        scale_up_step: Some(config.scale_up_step),
        scale_down_step: Some(config.scale_down_step),
        idle_period: Some(config.idle_period),
        cooldown: Some(config.cooldown),
        max_jobs: config.max_jobs,
        max_memory: config.max_memory,
        drain_timeout: Some(config.drain_timeout),
        ..WorkerSettings::default()
    }
}

/// The settings in force with `pool` laid over the worker's own.
fn effective(config: &WorkerConfig, pool: Option<&InForce>) -> WorkerSettings {
    let mut s = own(config);
    if let Some(p) = pool {
        s.overlay(&p.settings);
    }
    s
}

/// [`Tuning`] for effective settings `s` (queues as the server now has them).
fn tuning(config: &WorkerConfig, s: &WorkerSettings, queues: Vec<String>, pool: Option<&InForce>) -> Tuning {
    let (min, max) = match (s.autoscale, s.concurrency) {
        (Some(a), _) => (a.min, a.max),
        (None, Some(c)) => (c, c),
        (None, None) => config.concurrency_bounds(),
    };
    Tuning {
        min,
        max,
        scale_up_step: s.scale_up_step.unwrap_or(config.scale_up_step),
        scale_down_step: s.scale_down_step.unwrap_or(config.scale_down_step),
        idle_period: s.idle_period.unwrap_or(config.idle_period),
        cooldown: s.cooldown.unwrap_or(config.cooldown),
        max_jobs: s.max_jobs,
        max_memory: s.max_memory,
        drain_timeout: s.drain_timeout(),
        queues,
        pool: pool.map(|p| (p.pool.clone(), p.generation)),
    }
}

/// What a sync asks of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Synced {
    /// Carry on.
    Done,
    /// Register again (before the session's first claim) to carry the pool's tags.
    Reregister,
}

/// Asks once and applies what came back. `before_claims`: the session has not claimed
/// yet, so a new set of tags is taken by registering again rather than by a restart. An
/// error (an older server without pools, or none reachable) leaves everything as it is.
/// `projects`: the `project:NAME` tags of the worker configs' projects, carried besides
/// the worker's own and the pool's tags.
pub(crate) async fn sync(ctx: &Ctx, before_claims: bool, projects: &[String]) -> Synced {
    let config = &ctx.config;
    let query = PoolQuery {
        name: config.name.clone(),
        host: config.host.clone(),
        tags: config.tags.clone(),
        queues: config.queues.clone(),
    };
    let reply = match ctx.client.pool(&query).await {
        Ok(r) => r,
        Err(e) => {
            // 404: a server of a release without pools; unreachable: asked again soon.
            if e.status() == Some(404) || e.is_transient() {
                tracing::debug!("cannot ask which worker pool is in force: {e}");
            } else {
                tracing::warn!("cannot ask which worker pool is in force: {e}");
            }
            return Synced::Done;
        }
    };
    let before = ctx.fleet.tuning();
    let in_force = reply.in_force.as_ref();
    let mut next = effective(config, in_force);
    for t in projects {
        if !next.tags.contains(t) {
            next.tags.push(t.clone());
        }
    }
    let mut live = next.clone();
    let registered = WorkerSettings { tags: ctx.registered_tags(), ..next.clone() };
    let mut synced = Synced::Done;
    if let Change::Restart(fixed) = change(&registered, &next) {
        let pool = in_force.map_or("its own settings", |p| p.pool.as_str());
        if before_claims && ctx.attempts.running_count() == 0 {
            tracing::info!(pool, tags = ?next.tags, "registering again with the tags the pool in force sets");
            ctx.set_registered_tags(next.tags.clone());
            synced = Synced::Reregister;
        } else if config.supervised {
            ctx.fleet.request_recycle(format!(
                "the worker pool {pool} changed {} (set when the worker starts): restarting",
                fixed.join(", ")
            ));
        } else {
            tracing::warn!(pool, settings = %fixed.join(", "),
                "the worker pool in force changes settings this worker takes only when it starts; \
                 keeping its own until it is restarted");
        }
        live.tags = ctx.registered_tags();
    }
    let after = tuning(config, &live, reply.queues, in_force);
    if after != before {
        tracing::info!(pool = ?after.pool, min = after.min, max = after.max, queues = ?after.queues,
            "worker pool settings in force");
        ctx.fleet.retune(after);
    }
    synced
}

/// Converges on the declared pool and configs every [`RESYNC`] until the session ends.
pub(crate) async fn pool_loop(ctx: Arc<Ctx>, session: CancellationToken) {
    loop {
        tokio::select! {
            () = session.cancelled() => return,
            () = tokio::time::sleep(RESYNC) => {}
        }
        let configs = crate::hostconfig::fetch(&ctx).await;
        let projects = crate::hostconfig::project_tags_or_kept(&ctx, configs.as_deref());
        sync(&ctx, false, &projects).await;
        if let Some(c) = configs {
            crate::hostconfig::converge(&ctx, &c).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(settings: WorkerSettings) -> InForce {
        InForce { pool: "p".into(), generation: 3, settings }
    }

    #[test]
    fn a_pool_overlays_the_worker_own_settings() {
        let mut c = WorkerConfig::new("http://h:1", "t", "/ws");
        c.concurrency = 2;
        c.queues = vec!["default".into()];
        let p = pool(WorkerSettings { concurrency: Some(5), ..WorkerSettings::default() });
        let s = effective(&c, Some(&p));
        let t = tuning(&c, &s, vec!["default".into(), "x".into()], Some(&p));
        assert_eq!((t.min, t.max, t.pool.clone()), (5, 5, Some(("p".into(), 3))));
        assert_eq!(change(&own(&c), &s), Change::Live);
        let p = pool(WorkerSettings {
            autoscale: Some(Autoscale { min: 1, max: 8 }),
            ..WorkerSettings::default()
        });
        let t = tuning(&c, &effective(&c, Some(&p)), vec![], Some(&p));
        assert_eq!((t.min, t.max), (1, 8));
        let none = tuning(&c, &effective(&c, None), c.queues.clone(), None);
        assert_eq!(none, Tuning::of(&c), "no pool: the worker's own settings");
        let tagged = pool(WorkerSettings { tags: vec!["gpu".into()], ..WorkerSettings::default() });
        assert_eq!(change(&own(&c), &effective(&c, Some(&tagged))), Change::Restart(vec!["tags"]));
    }
}
