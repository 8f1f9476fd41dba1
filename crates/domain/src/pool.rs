//! The `WorkerPool` resource: a selector (host names, worker names, tags a worker carries)
//! and the [`WorkerSettings`] it lays over each matching worker's own. Which pool is in
//! force for a worker (higher `priority`, then the older pool, then the name), and which
//! settings a running worker can take on live. Pure rules; the server resolves, the worker
//! applies.

use crate::limits;
use crate::settings::WorkerSettings;
use crate::spec::SpecError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most entries in one selector list.
pub const MAX_SELECTOR_ENTRIES: usize = 100;

/// Which workers a pool applies to. Every list given must match (a worker matches a list
/// when it names the worker's host, name or one of its tags); `*` matches any host or name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Host names (`*`: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Worker names (`*`: any worker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// Tags; a worker matches if it carries any of them (its own `--tag`s, not a pool's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A worker as a selector sees it.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// Its registered name.
    pub name: &'a str,
    /// Its host.
    pub host: &'a str,
    /// The tags it was started with.
    pub tags: &'a [String],
}

impl Selector {
    /// Names at least one way to select, with entries of a bounded size; paths in errors
    /// start at `selector` (the same rules for pools and configs).
    pub fn validate(&self) -> Result<(), SpecError> {
        let sel = self;
        if sel.hosts.is_empty() && sel.workers.is_empty() && sel.tags.is_empty() {
            return Err(err(
                "selector",
                "names no hosts, workers or tags; use workers: [\"*\"] for every worker",
            ));
        }
        for (field, list) in [("hosts", &sel.hosts), ("workers", &sel.workers), ("tags", &sel.tags)] {
            limits::check_count(&format!("selector.{field}"), list.len(), MAX_SELECTOR_ENTRIES)?;
            for (i, v) in list.iter().enumerate() {
                limits::check_text(&format!("selector.{field}[{i}]"), v, limits::MAX_NAME)?;
                if v.trim().is_empty() {
                    return Err(err(format!("selector.{field}[{i}]"), "empty"));
                }
            }
        }
        Ok(())
    }

    /// True when every list given matches `m`.
    pub fn matches(&self, m: Member<'_>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        (self.hosts.is_empty() || any(&self.hosts, m.host))
            && (self.workers.is_empty() || any(&self.workers, m.name))
            && (self.tags.is_empty() || self.tags.iter().any(|t| m.tags.contains(t)))
    }
}

/// A `WorkerPool`'s spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The workers it applies to.
    pub selector: Selector,
    /// When two pools match one worker, the higher priority wins (then the older pool).
    #[serde(default)]
    pub priority: i32,
    /// What it imposes: queues, tags, concurrency or autoscale bounds, recycling limits,
    /// drain timeout.
    pub settings: WorkerSettings,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

impl PoolSpec {
    /// Checks the selector and the settings: a pool names at least one way to select, and
    /// sets only what a pool may impose (not the server, name, namespace, profile, workspace or
    /// run-as user, which say who a worker is and where and as whom it runs).
    pub fn validate(&self) -> Result<(), SpecError> {
        self.selector.validate()?;
        let s = &self.settings;
        for (field, set) in [
            ("server", s.server.is_some()),
            ("name", s.name.is_some()),
            ("profile", s.profile.is_some()),
            ("workspace", s.workspace.is_some()),
            ("namespace", s.namespace.is_some()),
            ("runAs", s.run_as.is_some()),
        ] {
            if set {
                return Err(err(
                    format!("settings.{field}"),
                    "a pool cannot set this: it says who a worker is or where it runs (give it with the worker's own flags)",
                ));
            }
        }
        limits::check_count("settings.queues", s.queues.len(), limits::MAX_QUEUES)?;
        for (i, q) in s.queues.iter().enumerate() {
            limits::check_name(&format!("settings.queues[{i}]"), q)?;
        }
        limits::check_count("settings.tags", s.tags.len(), limits::MAX_QUEUES)?;
        for (i, t) in s.tags.iter().enumerate() {
            limits::check_name(&format!("settings.tags[{i}]"), t)?;
        }
        s.check().map_err(|e| err(format!("settings.{}", camel(e.field)), e.message))
    }
}

/// `--scale-up-step` → `scaleUpStep`: a settings rule's flag as the document's field.
fn camel(flag: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in flag.trim_start_matches('-').chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    match out.as_str() {
        "queue" => "queues".into(),
        "tag" => "tags".into(),
        _ => out,
    }
}

/// A pool as the resolver sees it.
#[derive(Clone, Debug)]
pub struct Declared<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its generation (the worker reports the one it applied).
    pub generation: i64,
    /// When it was created (the older pool wins a tie).
    pub created_at: DateTime<Utc>,
    /// Its spec.
    pub spec: &'a PoolSpec,
}

/// The pool in force for one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InForce {
    /// The pool's name.
    pub pool: String,
    /// Its generation.
    pub generation: i64,
    /// The settings it imposes.
    pub settings: WorkerSettings,
}

/// The pool in force for `m`: of the matching pools, the highest priority, then the
/// oldest, then the first name; `None` when none matches.
pub fn resolve<'a>(pools: impl IntoIterator<Item = Declared<'a>>, m: Member<'_>) -> Option<InForce> {
    pools
        .into_iter()
        .filter(|p| p.spec.selector.matches(m))
        .min_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then(a.created_at.cmp(&b.created_at))
                .then(a.name.cmp(b.name))
        })
        .map(|p| InForce {
            pool: p.name.to_string(),
            generation: p.generation,
            settings: p.spec.settings.clone(),
        })
}

/// What applying `next` over `current` (both effective settings) takes: nothing, a live
/// change, or a restart because a setting only takes effect when the worker registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The same settings.
    None,
    /// Applied while running: concurrency, autoscale bounds, recycling limits, drain
    /// timeout, queues.
    Live,
    /// These settings are fixed when the worker starts (the tags jobs are routed by, and
    /// the autoscaler's steps and timings): the worker drains and is started again.
    Restart(Vec<&'static str>),
}

/// Compares effective settings before and after a pool change.
pub fn change(current: &WorkerSettings, next: &WorkerSettings) -> Change {
    if current == next {
        return Change::None;
    }
    let mut fixed = Vec::new();
    for (name, differs) in [
        ("tags", current.tags != next.tags),
        ("scaleUpStep", current.scale_up_step != next.scale_up_step),
        ("scaleDownStep", current.scale_down_step != next.scale_down_step),
        ("idlePeriod", current.idle_period != next.idle_period),
        ("cooldown", current.cooldown != next.cooldown),
    ] {
        if differs {
            fixed.push(name);
        }
    }
    if fixed.is_empty() { Change::Live } else { Change::Restart(fixed) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(sel: Selector, priority: i32, concurrency: u32) -> PoolSpec {
        PoolSpec {
            selector: sel,
            priority,
            settings: WorkerSettings { concurrency: Some(concurrency), ..WorkerSettings::default() },
        }
    }

    #[test]
    fn selectors_match_hosts_names_and_tags() {
        let tags = vec!["gpu".to_string()];
        let m = Member { name: "w1", host: "h1", tags: &tags };
        assert!(Selector { workers: vec!["*".into()], ..Selector::default() }.matches(m));
        assert!(Selector { hosts: vec!["h2".into(), "h1".into()], ..Selector::default() }.matches(m));
        assert!(!Selector { hosts: vec!["h2".into()], ..Selector::default() }.matches(m));
        assert!(Selector { tags: vec!["gpu".into()], ..Selector::default() }.matches(m));
        assert!(
            !Selector { hosts: vec!["h1".into()], tags: vec!["cpu".into()], ..Selector::default() }
                .matches(m),
            "every list given must match"
        );
    }

    #[test]
    fn priority_then_age_then_name_decides() {
        let all = Selector { workers: vec!["*".into()], ..Selector::default() };
        let (a, b, c) = (spec(all.clone(), 0, 2), spec(all.clone(), 5, 3), spec(all, 5, 4));
        let t = |s| Utc.timestamp_opt(s, 0).unwrap();
        let tags = Vec::new();
        let m = Member { name: "w", host: "h", tags: &tags };
        let pools = vec![
            Declared { name: "a", generation: 1, created_at: t(1), spec: &a },
            Declared { name: "c", generation: 7, created_at: t(3), spec: &c },
            Declared { name: "b", generation: 2, created_at: t(2), spec: &b },
        ];
        let won = resolve(pools.clone(), m).unwrap();
        assert_eq!((won.pool.as_str(), won.generation, won.settings.concurrency), ("b", 2, Some(3)));
        let none = Member { name: "w", host: "h", tags: &tags };
        let only_a = resolve(pools.into_iter().filter(|p| p.name == "a"), none).unwrap();
        assert_eq!(only_a.pool, "a");
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = spec(Selector::default(), 0, 2);
        assert_eq!(s.validate().unwrap_err().path, "selector");
        s.selector.workers = vec!["*".into()];
        s.validate().unwrap();
        s.settings.workspace = Some("/x".into());
        assert_eq!(s.validate().unwrap_err().path, "settings.workspace");
        s.settings.workspace = None;
        s.settings.concurrency = Some(0);
        assert_eq!(s.validate().unwrap_err().path, "settings.concurrency");
        s.settings.concurrency = Some(2);
        s.settings.scale_up_step = Some(5000);
        assert_eq!(s.validate().unwrap_err().path, "settings.scaleUpStep");
    }

    #[test]
    fn only_tags_need_a_restart() {
        let a = WorkerSettings { concurrency: Some(2), ..WorkerSettings::default() };
        assert_eq!(change(&a, &a), Change::None);
        let b = WorkerSettings { concurrency: Some(5), queues: vec!["x".into()], ..a.clone() };
        assert_eq!(change(&a, &b), Change::Live);
        let c = WorkerSettings { tags: vec!["gpu".into()], ..b.clone() };
        assert_eq!(change(&b, &c), Change::Restart(vec!["tags"]));
    }
}
