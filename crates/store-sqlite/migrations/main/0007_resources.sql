-- Declared resources (`rota apply`): one row per kind and name. `spec` is the canonical
-- JSON text of the typed spec (equal specs are equal text), `labels` and `status` JSON.
-- `namespace`: every resource belongs to one (PRODUCT.md); all are `default` until
-- namespaces reach the API. `generation` rises only when the spec changes (rota_domain::resource::apply).
CREATE TABLE resources (
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL DEFAULT 'default',
    name       TEXT NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}',
    generation INTEGER NOT NULL CHECK (generation >= 1),
    spec       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;
