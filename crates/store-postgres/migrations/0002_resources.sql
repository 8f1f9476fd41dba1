-- Declared resources (`rota apply`): one row per kind and name. `spec` is the canonical
-- JSON text of the typed spec (text, not jsonb: equal specs must stay equal text), labels
-- and status JSON text. `generation` rises only when the spec changes
-- (rota_domain::resource::apply). Additive: servers of schema 1 ignore it.
CREATE TABLE resources (
    kind       text NOT NULL,
    namespace  text NOT NULL DEFAULT 'default',
    name       text NOT NULL,
    labels     text NOT NULL DEFAULT '{}',
    generation bigint NOT NULL CHECK (generation >= 1),
    spec       text NOT NULL,
    status     text NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
