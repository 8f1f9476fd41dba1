//! Declared resources (`/api/v1/resources/...`, `rota apply`): the documents users write
//! (`kind`, `metadata`, `spec`), what an apply answers per document, the stored views
//! (`metadata.generation`, `status`) and `rota run`'s request. Kubernetes-shaped, camelCase
//! outside the specs (which keep the snake_case of the job document).

use crate::secrets::SecretSpec;
use rota_domain::hostconfig::WorkerConfigSpec;
use rota_domain::pool::PoolSpec;
use rota_domain::resource::{Applied, Kind, Metadata, Status};
use rota_domain::schedule::ScheduleSpec;
use rota_domain::spec::SpecError;
use rota_domain::workflow::WorkflowSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only `apiVersion` rota knows; documents may leave it out.
pub const API_VERSION: &str = "rota/v1";

/// One declared resource, as written in a file: the kind says which spec it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind")]
// A pool's settings are the largest; a handful of documents per request, never a hot path,
// so boxing would only complicate every match and the schema.
#[allow(clippy::large_enum_variant)]
pub enum ResourceDocument {
    /// A named, parameterized DAG of steps, started with `rota run`.
    Workflow(WorkflowDocument),
    /// Settings laid over the workers a selector names.
    WorkerPool(WorkerPoolDocument),
    /// What the workers a selector names set up on their hosts.
    WorkerConfig(WorkerConfigDocument),
    /// Runs of a workflow at the fire times of a cron pattern in a time zone.
    Schedule(ScheduleDocument),
    /// Named key/value data, stored encrypted (values are write-only).
    Secret(SecretDocument),
}

/// A `Secret` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretDocument {
    /// `rota/v1` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// Its values (write-only), or its key names and sizes as read.
    pub spec: SecretSpec,
}

/// A `WorkerConfig` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerConfigDocument {
    /// `rota/v1` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// Which workers, and what they set up.
    pub spec: WorkerConfigSpec,
}

/// A `WorkerPool` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkerPoolDocument {
    /// `rota/v1` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// Which workers, and what it imposes on them.
    pub spec: PoolSpec,
}

/// A `Workflow` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowDocument {
    /// `rota/v1` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// What it runs.
    pub spec: WorkflowSpec,
}

/// A `Schedule` document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleDocument {
    /// `rota/v1` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// When it fires and what it runs.
    pub spec: ScheduleSpec,
}

impl ResourceDocument {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            ResourceDocument::Workflow(_) => Kind::Workflow,
            ResourceDocument::WorkerPool(_) => Kind::WorkerPool,
            ResourceDocument::WorkerConfig(_) => Kind::WorkerConfig,
            ResourceDocument::Schedule(_) => Kind::Schedule,
            ResourceDocument::Secret(_) => Kind::Secret,
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            ResourceDocument::Workflow(d) => &d.metadata,
            ResourceDocument::WorkerPool(d) => &d.metadata,
            ResourceDocument::WorkerConfig(d) => &d.metadata,
            ResourceDocument::Schedule(d) => &d.metadata,
            ResourceDocument::Secret(d) => &d.metadata,
        }
    }

    /// Its name, labels and namespace, to change (the server puts a document that names no
    /// namespace into the call's).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        match self {
            ResourceDocument::Workflow(d) => &mut d.metadata,
            ResourceDocument::WorkerPool(d) => &mut d.metadata,
            ResourceDocument::WorkerConfig(d) => &mut d.metadata,
            ResourceDocument::Schedule(d) => &mut d.metadata,
            ResourceDocument::Secret(d) => &mut d.metadata,
        }
    }

    /// Its `apiVersion`, if it gave one.
    pub fn api_version(&self) -> Option<&str> {
        match self {
            ResourceDocument::Workflow(d) => d.api_version.as_deref(),
            ResourceDocument::WorkerPool(d) => d.api_version.as_deref(),
            ResourceDocument::WorkerConfig(d) => d.api_version.as_deref(),
            ResourceDocument::Schedule(d) => d.api_version.as_deref(),
            ResourceDocument::Secret(d) => d.api_version.as_deref(),
        }
    }

    /// Its spec, whichever its kind.
    pub fn spec(&self) -> ResourceSpec {
        match self {
            ResourceDocument::Workflow(d) => ResourceSpec::Workflow(d.spec.clone()),
            ResourceDocument::WorkerPool(d) => ResourceSpec::WorkerPool(d.spec.clone()),
            ResourceDocument::WorkerConfig(d) => ResourceSpec::WorkerConfig(d.spec.clone()),
            ResourceDocument::Schedule(d) => ResourceSpec::Schedule(d.spec.clone()),
            // Values are write-only: a document's spec as shown carries its key names only.
            ResourceDocument::Secret(d) => ResourceSpec::Secret(SecretSpec {
                keys: d
                    .spec
                    .values()
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len() as u64))
                    .collect(),
                ..SecretSpec::default()
            }),
        }
    }

    /// Checks the spec by its kind's rules; the error's path is relative to `spec`.
    pub fn validate_spec(&self) -> Result<(), SpecError> {
        match self {
            ResourceDocument::Workflow(d) => d.spec.validate(),
            ResourceDocument::WorkerPool(d) => d.spec.validate(),
            ResourceDocument::WorkerConfig(d) => d.spec.validate(),
            ResourceDocument::Schedule(d) => d.spec.validate(),
            ResourceDocument::Secret(d) => d.spec.values().map(|_| ()).map_err(SpecError::from),
        }
    }
}

/// A stored resource's spec, whichever its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
// As for `ResourceDocument`: sizes of declared resources do not matter.
#[allow(clippy::large_enum_variant)]
pub enum ResourceSpec {
    /// A workflow's.
    Workflow(WorkflowSpec),
    /// A worker pool's.
    WorkerPool(PoolSpec),
    /// A worker config's.
    WorkerConfig(WorkerConfigSpec),
    /// A schedule's.
    Schedule(ScheduleSpec),
    /// A secret's: key names and sizes only.
    Secret(SecretSpec),
}

impl ResourceSpec {
    /// A stored spec of `kind` (as the store keeps it: the spec's JSON).
    pub fn parse(kind: Kind, text: &str) -> Result<ResourceSpec, serde_json::Error> {
        Ok(match kind {
            Kind::Workflow => ResourceSpec::Workflow(serde_json::from_str(text)?),
            Kind::WorkerPool => ResourceSpec::WorkerPool(serde_json::from_str(text)?),
            Kind::WorkerConfig => ResourceSpec::WorkerConfig(serde_json::from_str(text)?),
            Kind::Schedule => ResourceSpec::Schedule(serde_json::from_str(text)?),
            Kind::Secret => ResourceSpec::Secret(serde_json::from_str(text)?),
        })
    }
}

/// `POST /api/v1/resources/apply`: documents applied together (all or nothing).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyRequest {
    /// The documents, in order; errors name them by index (`/documents/2/spec/...`).
    pub documents: Vec<ResourceDocument>,
    /// Only say what would change (`rota diff`); nothing is stored.
    #[serde(default)]
    pub dry_run: bool,
}

/// What applying one document did (or, dry, would do).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub action: Applied,
    /// Its generation afterwards.
    pub generation: u64,
    /// The stored spec before, if it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ResourceSpec>,
    /// The stored labels before, if it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_labels: Option<BTreeMap<String, String>>,
}

/// The answer to an apply, one result per document in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// Per document.
    pub results: Vec<ApplyResult>,
    /// Whether this was a dry run (nothing stored).
    pub dry_run: bool,
}

/// A stored resource's metadata: as declared, plus what the server keeps.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMetadata {
    /// Unique among resources of its kind in its namespace.
    pub name: String,
    /// Its namespace (left out when `default`, as in manifests).
    #[serde(
        default = "rota_domain::namespace::default_owned",
        skip_serializing_if = "rota_domain::namespace::is_default"
    )]
    pub namespace: String,
    /// As declared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Rises by one each time the spec changes (1 when created).
    pub generation: u64,
    /// When it was first applied.
    pub creation_timestamp: chrono::DateTime<chrono::Utc>,
}

/// A stored resource.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    /// `rota/v1`.
    pub api_version: String,
    /// Its kind.
    pub kind: Kind,
    /// Its metadata.
    pub metadata: StoredMetadata,
    /// As declared.
    pub spec: ResourceSpec,
    /// As observed.
    pub status: Status,
}

/// Most resources one listing page holds when the request does not say.
pub const DEFAULT_LIST_LIMIT: u32 = 500;
/// Most resources one listing page may hold (`limit`).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// `GET /api/v1/resources/{kind}`: one page of a listing, as Kubernetes pages them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListResourcesQuery {
    /// At most this many (default 500, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The previous page's `continue` token: this page starts after it. Opaque to clients.
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

/// Resources of one kind, by name (byte order), one page at a time.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceList {
    /// This page's resources.
    pub items: Vec<ResourceView>,
    /// Present when more remain: pass it back as `?continue=` for the next page. Absent on
    /// the last page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// Names one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// Its kind (`Workflow`, `workflows`, `wf`).
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// `POST /api/v1/resources/delete`: resources deleted together.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// What to delete.
    pub resources: Vec<ResourceRef>,
}

/// Whether one resource existed (and is now gone).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// False if there was nothing to delete.
    pub deleted: bool,
}

/// The answer to a delete, one result per resource in order.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeleteResponse {
    /// Per resource.
    pub results: Vec<DeleteResult>,
}

/// `POST /api/v1/workflows/{name}/runs`: starts a workflow.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunRequest {
    /// Input values as text (`--input K=V`); typed and checked by the server.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Run on this host (or worker name) instead of the workflow's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_kubernetes_shaped_and_strict() {
        let doc: ResourceDocument = serde_json::from_str(
            r#"{"apiVersion":"rota/v1","kind":"Workflow","metadata":{"name":"w"},"spec":{"steps":[{"name":"a","run":"true"}]}}"#,
        )
        .unwrap();
        assert_eq!((doc.kind(), doc.metadata().name.as_str()), (Kind::Workflow, "w"));
        let e = serde_json::from_str::<ResourceDocument>(
            r#"{"kind":"Workflow","metadata":{"name":"w"},"spec":{"steps":[]},"extra":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e =
            serde_json::from_str::<ResourceDocument>(r#"{"kind":"Pod","metadata":{"name":"w"},"spec":{}}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("unknown variant `Pod`"), "{e}");
    }
}
