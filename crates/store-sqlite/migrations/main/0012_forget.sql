-- Revocable credentials (issue 18). `credentials`: during a rotation's grace the replaced
-- hash is still accepted until `previous_until`; `handover` holds the new token sealed under
-- the control plane's key-encryption key, so any server can hand it to a supervisor that
-- still presents the old one (cleared by the next rotation). `workers.forgotten_at`: an
-- operator forgot the session (`rota worker forget`), so its credential is answered "forgotten".
-- `blocked_workers`: names that may not register again until unblocked. Additive: servers of
-- schema 11 ignore it (they neither honour a grace nor a block).
ALTER TABLE credentials ADD COLUMN previous_hash TEXT;
ALTER TABLE credentials ADD COLUMN previous_until INTEGER;
ALTER TABLE credentials ADD COLUMN handover TEXT;
ALTER TABLE workers ADD COLUMN forgotten_at INTEGER;
CREATE TABLE blocked_workers (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    blocked_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
