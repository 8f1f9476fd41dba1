-- Revocable credentials (issue 18). `credentials`: during a rotation's grace the replaced
-- hash is still accepted until `previous_until`; `handover` holds the new token sealed under
-- the control plane's key-encryption key, so any server can hand it to a supervisor that
-- still presents the old one (cleared by the next rotation). `workers.forgotten_at`: an
-- operator forgot the session (`rota worker forget`), so its credential is answered "forgotten".
-- `blocked_workers`: names that may not register again until unblocked. Additive: servers of
-- schema 5 and 6 ignore it (they neither honour a grace nor a block).
ALTER TABLE credentials ADD COLUMN previous_hash text;
ALTER TABLE credentials ADD COLUMN previous_until timestamptz;
ALTER TABLE credentials ADD COLUMN handover text;
ALTER TABLE workers ADD COLUMN forgotten_at timestamptz;
CREATE TABLE blocked_workers (
    namespace  text NOT NULL,
    name       text NOT NULL,
    blocked_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);
