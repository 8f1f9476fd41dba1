-- Revokes of idempotency keys (`rota worker revoke --key K`): a job submitted later with
-- the key ends `revoked` at once (fleet.rs apply_pending_revoke), until the revoke expires.
-- Revokes of job ids stay in `revokes`; rows written before this migration are kept.
CREATE TABLE key_revokes (
    idempotency_key TEXT PRIMARY KEY,
    terminate       INTEGER NOT NULL,
    signal          INTEGER,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX key_revokes_expiry ON key_revokes (expires_at) WHERE expires_at IS NOT NULL;
