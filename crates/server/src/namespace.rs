//! The namespace an operator request acts in (`Scope`), read from the query string of every
//! `/api/v1` call: `namespace` (default `default`) and, for listings, `allNamespaces`. It
//! owns parsing and checking those two parameters; what a namespace sees is each route's.

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rota_api_types::namespace::NamespaceQuery;
use rota_domain::namespace;

/// Where an operator call acts.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// The namespace named (or `default`).
    pub(crate) namespace: String,
    /// `allNamespaces=true`: listings show every namespace.
    pub(crate) all: bool,
}

impl Scope {
    /// The namespace a listing is limited to, `None` for every namespace.
    pub(crate) fn filter(&self) -> Option<&str> {
        (!self.all).then_some(self.namespace.as_str())
    }

    /// Whether a record of `ns` is visible to this call.
    pub(crate) fn sees(&self, ns: &str) -> bool {
        self.all || self.namespace == ns
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Other parameters of the route are its own; serde ignores them here.
        let axum::extract::Query(q) = axum::extract::Query::<NamespaceQuery>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let ns = q.namespace.unwrap_or_else(namespace::default_owned);
        namespace::check("namespace", &ns).map_err(ApiError::limit)?;
        Ok(Scope { namespace: ns, all: q.all_namespaces.unwrap_or(false) })
    }
}
