-- Fleet control: durable revokes and paused queues.
CREATE TABLE revokes (
    job_id     TEXT PRIMARY KEY,
    terminate  INTEGER NOT NULL,
    signal     INTEGER,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX revokes_expiry ON revokes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE paused_queues (
    queue     TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
);
