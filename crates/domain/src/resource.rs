//! Declared resources (`rota apply`): Kubernetes-shaped documents (`kind`, `metadata`,
//! `spec`) and the rules every kind shares: names and labels, the document's size bound,
//! `generation` (rises only when the spec changes), what an apply did (created, configured,
//! unchanged), and `status.conditions` (a transition time moves only when the status does).
//! Kind-specific specs live in their own modules ([`crate::workflow`]); storage and the
//! reconcilers live elsewhere.

use crate::limits::{self, LimitError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Largest resource document accepted, in bytes of its text (YAML or JSON).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most labels on one resource.
pub const MAX_LABELS: usize = 64;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 256;
/// Most conditions in one status.
pub const MAX_CONDITIONS: usize = 32;

/// The kinds of resource rota knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Kind {
    /// A named, parameterized DAG of steps, started with `rota run`.
    Workflow,
    /// Runs of a workflow at the fire times of a cron pattern in a time zone.
    Schedule,
    /// Settings laid over the workers a selector names.
    WorkerPool,
    /// Environment, files, a setup script and projects for the workers a selector names.
    WorkerConfig,
    /// Named key/value data steps and configs refer to; stored encrypted, apart from the
    /// other kinds, and never shown (reads show key names and sizes).
    Secret,
}

impl Kind {
    /// Every kind, in the order listings show them.
    pub const ALL: &'static [Kind] =
        &[Kind::Workflow, Kind::Schedule, Kind::WorkerPool, Kind::WorkerConfig, Kind::Secret];

    /// The kind's name as documents write it (`Workflow`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workflow => "Workflow",
            Kind::WorkerPool => "WorkerPool",
            Kind::WorkerConfig => "WorkerConfig",
            Kind::Schedule => "Schedule",
            Kind::Secret => "Secret",
        }
    }

    /// Its plural, as the API's paths and `rota get` write it (`workflows`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Workflow => "workflows",
            Kind::WorkerPool => "workerpools",
            Kind::WorkerConfig => "workerconfigs",
            Kind::Schedule => "schedules",
            Kind::Secret => "secrets",
        }
    }

    /// Its short name for `rota get` (`wf`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::Workflow => "wf",
            Kind::WorkerPool => "pool",
            Kind::WorkerConfig => "wc",
            Kind::Schedule => "sched",
            Kind::Secret => "secret",
        }
    }

    /// The kind a user wrote: its document name, singular, plural or short name, in any case.
    pub fn parse(s: &str) -> Result<Kind, UnknownKind> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .iter()
            .copied()
            .find(|k| lower == k.as_str().to_ascii_lowercase() || lower == k.plural() || lower == k.short())
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind rota does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind `{0}`; known kinds: {known}", known = known_kinds())]
pub struct UnknownKind(pub String);

fn known_kinds() -> String {
    Kind::ALL
        .iter()
        .map(|k| format!("{} ({}, {})", k.as_str(), k.plural(), k.short()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the user declares about a resource besides its spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique among resources of its kind in its namespace.
    pub name: String,
    /// The namespace it belongs to (`default` unless given; left out of documents then).
    #[serde(
        default = "crate::namespace::default_owned",
        skip_serializing_if = "crate::namespace::is_default"
    )]
    pub namespace: String,
    /// Free-form key/value pairs for selecting resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Metadata {
    /// Checks the name and labels, naming the offending field (`metadata.labels.team`).
    pub fn validate(&self) -> Result<(), LimitError> {
        limits::check_name("metadata.name", &self.name)?;
        crate::namespace::check("metadata.namespace", &self.namespace)?;
        limits::check_count("metadata.labels", self.labels.len(), MAX_LABELS)?;
        for (k, v) in &self.labels {
            limits::check_name(&format!("metadata.labels.{k}"), k)?;
            limits::check_text(&format!("metadata.labels.{k}"), v, MAX_LABEL_VALUE)?;
        }
        Ok(())
    }
}

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// One observation a controller made about a resource (`Ready`, `Valid`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What is observed, e.g. `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// One CamelCase word saying why.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// What the server observed of a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The generation the conditions describe (0: none observed yet).
    #[serde(default)]
    pub observed_generation: u64,
    /// The observations, one per type. Always written, `[]` before any: the field is part
    /// of every resource's shape (clients read `status.conditions` without a guard).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// A schedule's fire times and recent fires: computed when it is read, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::ScheduleStatus>,
}

impl Status {
    /// Records condition `kind` as observed at `generation`. Its transition time moves only
    /// when its status changes (a new reason or message alone keeps it). Returns whether
    /// anything changed.
    pub fn observe(
        &mut self,
        generation: u64,
        kind: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let before = self.clone();
        self.observed_generation = generation;
        let room = self.conditions.len() < MAX_CONDITIONS;
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(c) => {
                if c.status != status {
                    c.status = status;
                    c.last_transition_time = now;
                }
                c.reason = reason.to_string();
                c.message = message.to_string();
            }
            None if room => self.conditions.push(Condition {
                kind: kind.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: now,
            }),
            // Conditions are set by rota's own controllers, a handful per kind.
            None => {}
        }
        *self != before
    }
}

/// A stored resource: what was declared, with the server's `generation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored<S> {
    /// Its kind.
    pub kind: Kind,
    /// As declared.
    pub metadata: Metadata,
    /// Rises by one each time the spec changes (1 when created).
    pub generation: u64,
    /// As declared.
    pub spec: S,
    /// As observed.
    pub status: Status,
}

/// What one apply did to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Applied {
    /// It did not exist.
    Created,
    /// Its spec or labels changed.
    Configured,
    /// Nothing changed.
    Unchanged,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        })
    }
}

/// The resource after applying `metadata` and `spec` over `existing`: a new one starts at
/// generation 1; the generation rises only when the spec differs; the status is kept.
pub fn apply<S: PartialEq>(
    kind: Kind,
    existing: Option<Stored<S>>,
    metadata: Metadata,
    spec: S,
) -> (Stored<S>, Applied) {
    match existing {
        None => (Stored { kind, metadata, generation: 1, spec, status: Status::default() }, Applied::Created),
        Some(old) => {
            let spec_changed = old.spec != spec;
            let applied = if spec_changed || old.metadata != metadata {
                Applied::Configured
            } else {
                Applied::Unchanged
            };
            let generation = if spec_changed { old.generation + 1 } else { old.generation };
            (Stored { kind, metadata, generation, spec, status: old.status }, applied)
        }
    }
}

/// A field path as validation errors write it (`spec.steps[1].needs[0]`, `env.A.B`,
/// `metadata.labels.app.io/x`) as a JSON pointer (`/spec/steps/1/needs/0`, RFC 6901), for
/// APIs and for mapping an error back to a file's line. After `env` and `labels` the rest
/// is one key: only those keys may hold dots.
pub fn json_pointer(path: &str) -> String {
    fn push(out: &mut String, key: &str) {
        out.push('/');
        out.push_str(&key.replace('~', "~0").replace('/', "~1"));
    }
    let mut out = String::new();
    let mut rest = path;
    let mut last = "";
    while !rest.is_empty() {
        if matches!(last, "env" | "labels") {
            push(&mut out, rest);
            break;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        if end > 0 {
            last = &rest[..end];
            push(&mut out, last);
        }
        rest = &rest[end..];
        while let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').unwrap_or(r.len());
            push(&mut out, &r[..close]);
            last = "";
            rest = r.get(close + 1..).unwrap_or("");
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(name: &str) -> Metadata {
        Metadata { name: name.into(), namespace: crate::namespace::default_owned(), labels: BTreeMap::new() }
    }

    #[test]
    fn field_paths_become_json_pointers() {
        assert_eq!(json_pointer("steps[1].needs[0]"), "/steps/1/needs/0");
        assert_eq!(json_pointer("spec.steps[0].env.A.B"), "/spec/steps/0/env/A.B");
        assert_eq!(json_pointer("metadata.labels.app.io/x"), "/metadata/labels/app.io~1x");
        assert_eq!(json_pointer("spec.inputs.n.default"), "/spec/inputs/n/default");
        assert_eq!(json_pointer("apiVersion"), "/apiVersion");
    }

    #[test]
    fn kinds_parse_by_every_name_in_any_case() {
        for s in ["Workflow", "workflow", "WORKFLOWS", "wf"] {
            assert_eq!(Kind::parse(s), Ok(Kind::Workflow), "{s}");
        }
        let e = Kind::parse("pods").unwrap_err().to_string();
        assert!(e.contains("unknown kind `pods`") && e.contains("Workflow (workflows, wf)"), "{e}");
        assert_eq!(Kind::parse("sched"), Ok(Kind::Schedule));
    }

    #[test]
    fn generation_rises_only_when_the_spec_changes() {
        let (v1, a) = apply(Kind::Workflow, None, meta("w"), 1);
        assert_eq!((a, v1.generation), (Applied::Created, 1));
        let (v1b, a) = apply(Kind::Workflow, Some(v1.clone()), meta("w"), 1);
        assert_eq!((a, v1b.generation), (Applied::Unchanged, 1));
        let mut labelled = meta("w");
        labelled.labels.insert("team".into(), "ops".into());
        let (v1c, a) = apply(Kind::Workflow, Some(v1b), labelled.clone(), 1);
        assert_eq!((a, v1c.generation), (Applied::Configured, 1), "labels alone keep the generation");
        let (v2, a) = apply(Kind::Workflow, Some(v1c), labelled, 2);
        assert_eq!((a, v2.generation), (Applied::Configured, 2));
    }

    #[test]
    fn a_condition_moves_its_transition_time_only_when_its_status_changes() {
        let t = |s: i64| DateTime::from_timestamp(1_900_000_000 + s, 0).unwrap();
        let mut st = Status::default();
        assert!(st.observe(1, "Ready", ConditionStatus::False, "Starting", "starting", t(0)));
        assert!(st.observe(1, "Ready", ConditionStatus::False, "Starting", "still starting", t(5)));
        assert_eq!(st.conditions[0].last_transition_time, t(0));
        assert!(!st.observe(1, "Ready", ConditionStatus::False, "Starting", "still starting", t(6)));
        assert!(st.observe(2, "Ready", ConditionStatus::True, "Running", "ready", t(9)));
        assert_eq!((st.observed_generation, st.conditions[0].last_transition_time), (2, t(9)));
    }

    #[test]
    fn names_and_labels_are_bounded() {
        assert!(meta("build-and-test").validate().is_ok());
        assert_eq!(meta("has space").validate().unwrap_err().field, "metadata.name");
        let mut m = meta("w");
        m.labels.insert("team".into(), "x".repeat(MAX_LABEL_VALUE + 1));
        assert_eq!(m.validate().unwrap_err().field, "metadata.labels.team");
    }
}
