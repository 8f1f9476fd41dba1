//! Declared resources as the store keeps them (`rota apply`): one row per kind and name
//! with its labels, `generation`, spec (canonical JSON text, written by the server from the
//! typed spec, so equal specs are equal text) and status. What an apply does to each row
//! (created, configured, unchanged; when the generation rises) is
//! `rota_domain::resource::apply`; the store only makes a batch of them one transaction.

use chrono::{DateTime, Utc};
use rota_domain::resource::{Kind, Metadata, Status};

/// One resource to create or update.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceWrite {
    /// Its kind.
    pub kind: Kind,
    /// Its name and labels.
    pub metadata: Metadata,
    /// Its spec as canonical JSON text.
    pub spec: String,
}

/// A stored resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceRecord {
    /// Its kind.
    pub kind: Kind,
    /// Its name and labels, as last applied.
    pub metadata: Metadata,
    /// Rises by one each time the spec changes (1 when created).
    pub generation: u64,
    /// Its spec as canonical JSON text.
    pub spec: String,
    /// What the controllers observed.
    pub status: Status,
    /// When it was first applied.
    pub created_at: DateTime<Utc>,
    /// When its spec, labels or status last changed.
    pub updated_at: DateTime<Utc>,
}

/// What one apply did to one resource, decided inside its transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedResource {
    /// Created, configured or unchanged.
    pub applied: rota_domain::resource::Applied,
    /// Its generation afterwards.
    pub generation: u64,
    /// What was stored before, if it existed.
    pub previous: Option<ResourceRecord>,
}

/// Names one resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ResourceKey {
    /// The key of `kind` named `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, kind: Kind, name: impl Into<String>) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ResourceKey {
    /// `workflows/deploy`, or `workflows/deploy in namespace a` outside `default`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.plural(), self.name)?;
        if !rota_domain::namespace::is_default(&self.namespace) {
            write!(f, " in namespace '{}'", self.namespace)?;
        }
        Ok(())
    }
}

impl ResourceWrite {
    /// Its key.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(self.metadata.namespace.clone(), self.kind, self.metadata.name.clone())
    }
}

/// A batch that names one resource twice is refused whole (`Invalid`), naming it: which
/// of the two was meant cannot be told.
pub fn check_distinct<'a>(keys: impl Iterator<Item = ResourceKey> + 'a) -> crate::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if !seen.insert(k.clone()) {
            return Err(crate::StoreError::Invalid(format!("{k} is named twice in one request")));
        }
    }
    Ok(())
}
