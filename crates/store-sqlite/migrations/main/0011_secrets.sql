-- Secrets (issue 15): one row per namespace and name. `sealed` holds the values as the server
-- sealed them (XChaCha20-Poly1305 under the key-encryption key whose fingerprint is
-- `key_fingerprint`); `keys` the key names and value sizes (JSON), which `rota get` shows.
-- Never a plaintext value, never the key. `secret_key`: the fingerprint of the key every
-- server must hold, stored once (insert-if-absent, like credentials). Version 10 is left to
-- the namespaces migration.
CREATE TABLE secrets (
    namespace       TEXT NOT NULL DEFAULT 'default',
    name            TEXT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    generation      INTEGER NOT NULL CHECK (generation >= 1),
    keys            TEXT NOT NULL DEFAULT '{}',
    sealed          BLOB NOT NULL,
    key_fingerprint TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;

CREATE TABLE secret_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL CHECK (fingerprint <> ''),
    created_at  INTEGER NOT NULL,
    rotated_at  INTEGER
);
