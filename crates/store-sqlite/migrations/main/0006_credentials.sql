-- Control-plane credentials: the SHA-256 hashes (hex) of the admin and join tokens, so that
-- every server of a control plane shares them and a rotation reaches all of them. Before
-- this migration the tokens lived only in the server's token files; the first start of the
-- new release stores their hashes here (credentials.rs init_credentials). Never a token.
CREATE TABLE credentials (
    kind       TEXT PRIMARY KEY CHECK (kind IN ('admin', 'join')),
    hash       TEXT NOT NULL CHECK (hash <> ''),
    created_at INTEGER NOT NULL,
    rotated_at INTEGER
);
