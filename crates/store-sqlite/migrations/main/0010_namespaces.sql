-- Namespaces (issue 15): every job, step, worker, paused queue, key revoke and schedule fire
-- belongs to one; rows written before this migration are in `default`. Idempotency keys,
-- worker names and paused queues are unique per namespace.
--
-- SQLite cannot drop the inline UNIQUE of `jobs.idempotency_key` nor change a primary key,
-- so `jobs`, `paused_queues`, `key_revokes` and `schedule_fires` are rebuilt (the runner
-- turns foreign keys off around this migration and checks them before it commits: steps
-- keep pointing at their jobs). Job ids stay unique across namespaces.

CREATE TABLE jobs_new (
    id              TEXT PRIMARY KEY,          -- UUID v7: sorts by submission time
    namespace       TEXT NOT NULL DEFAULT 'default',
    name            TEXT,
    queue           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    target_host     TEXT,
    target_tags     TEXT NOT NULL,             -- JSON array
    env             TEXT NOT NULL,             -- JSON object
    idempotency_key TEXT,                      -- unique per namespace (jobs_idempotency_key)
    deadline        INTEGER,
    spec            TEXT NOT NULL,             -- the whole JobSpec as JSON
    state           TEXT NOT NULL,
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
INSERT INTO jobs_new (id, namespace, name, queue, priority, target_host, target_tags, env,
                      idempotency_key, deadline, spec, state, reason, created_at, finished_at)
    SELECT id, 'default', name, queue, priority, target_host, target_tags, env,
           idempotency_key, deadline, spec, state, reason, created_at, finished_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_namespace ON jobs (namespace, id);
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Copied from the job, as queue and priority are, so the claim reads one index.
ALTER TABLE steps ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX steps_ready;
CREATE INDEX steps_ready ON steps (namespace, queue, priority DESC, job_id, idx) WHERE state = 'ready';
DROP INDEX steps_running;
CREATE INDEX steps_running ON steps (namespace, queue) WHERE state = 'running';

ALTER TABLE workers ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX workers_name;
CREATE INDEX workers_name ON workers (namespace, name, registered_at);

CREATE TABLE paused_queues_new (
    namespace TEXT NOT NULL DEFAULT 'default',
    queue     TEXT NOT NULL,
    paused_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
);
INSERT INTO paused_queues_new (namespace, queue, paused_at) SELECT 'default', queue, paused_at FROM paused_queues;
DROP TABLE paused_queues;
ALTER TABLE paused_queues_new RENAME TO paused_queues;

CREATE TABLE key_revokes_new (
    namespace       TEXT NOT NULL DEFAULT 'default',
    idempotency_key TEXT NOT NULL,
    terminate       INTEGER NOT NULL,
    signal          INTEGER,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (namespace, idempotency_key)
);
INSERT INTO key_revokes_new (namespace, idempotency_key, terminate, signal, expires_at, created_at)
    SELECT 'default', idempotency_key, terminate, signal, expires_at, created_at FROM key_revokes;
DROP TABLE key_revokes;
ALTER TABLE key_revokes_new RENAME TO key_revokes;
CREATE INDEX key_revokes_expiry ON key_revokes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE schedule_fires_new (
    namespace   TEXT NOT NULL DEFAULT 'default',
    schedule    TEXT NOT NULL,
    fire_time   INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('run', 'skipped', 'missed')),
    job_id      TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, schedule, fire_time)
) WITHOUT ROWID;
INSERT INTO schedule_fires_new (namespace, schedule, fire_time, outcome, job_id, recorded_at)
    SELECT 'default', schedule, fire_time, outcome, job_id, recorded_at FROM schedule_fires;
DROP TABLE schedule_fires;
ALTER TABLE schedule_fires_new RENAME TO schedule_fires;
