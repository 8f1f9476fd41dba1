//! The namespace an operator call acts in, as query parameters every `/api/v1` call takes:
//! `namespace` (default `default`) and, on listings, `allNamespaces`.

use serde::{Deserialize, Serialize};

/// `?namespace=NS&allNamespaces=true`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct NamespaceQuery {
    /// The namespace to act in (`default` when absent): a-z, 0-9 and `-`, at most 63.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listings only: every namespace (`namespace` is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_namespaces: Option<bool>,
}
