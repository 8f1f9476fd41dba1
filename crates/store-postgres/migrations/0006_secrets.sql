-- Secrets (issue 15): one row per namespace and name. `sealed` holds the values as the server
-- sealed them (XChaCha20-Poly1305 under the key-encryption key whose fingerprint is
-- `key_fingerprint`); `keys` the key names and value sizes (JSON text), which `rota get`
-- shows. Never a plaintext value, never the key. `secret_key`: the fingerprint of the key
-- every server must hold, stored once (insert-if-absent, like credentials). Version 5 is left
-- to the namespaces migration. Additive: servers of schema 1 to 4 ignore it.
CREATE TABLE secrets (
    namespace       text NOT NULL DEFAULT 'default',
    name            text NOT NULL,
    labels          text NOT NULL DEFAULT '{}',
    generation      bigint NOT NULL CHECK (generation >= 1),
    keys            text NOT NULL DEFAULT '{}',
    sealed          bytea NOT NULL,
    key_fingerprint text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE secret_key (
    id          integer PRIMARY KEY CHECK (id = 1),
    fingerprint text NOT NULL CHECK (fingerprint <> ''),
    created_at  timestamptz NOT NULL,
    rotated_at  timestamptz
);
