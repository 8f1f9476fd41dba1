-- Jobs, steps, attempts and worker sessions. Times are unix milliseconds.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,          -- UUID v7: sorts by submission time
    name            TEXT,
    queue           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    target_host     TEXT,
    target_tags     TEXT NOT NULL,             -- JSON array
    env             TEXT NOT NULL,             -- JSON object
    idempotency_key TEXT UNIQUE,
    deadline        INTEGER,
    spec            TEXT NOT NULL,             -- the whole JobSpec as JSON
    state           TEXT NOT NULL,
    reason          TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- queue, priority and target are copied from the job so the claim query reads one table.
CREATE TABLE steps (
    job_id         TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx            INTEGER NOT NULL,           -- position in the document
    name           TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    run_after      INTEGER,
    attempts_count INTEGER NOT NULL DEFAULT 0,
    log_cap        INTEGER,                    -- NULL = the default cap
    queue          TEXT NOT NULL,
    priority       INTEGER NOT NULL,
    target_host    TEXT,
    target_tags    TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE UNIQUE INDEX steps_job_idx ON steps (job_id, idx);
CREATE INDEX steps_claim ON steps (state, queue, priority DESC, job_id, idx);

-- id is the fencing id: AUTOINCREMENT never reuses one, even after pruning.
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT NOT NULL,
    step             TEXT NOT NULL,
    number           INTEGER NOT NULL,
    session          TEXT NOT NULL,
    worker_name      TEXT NOT NULL,
    status           TEXT NOT NULL,
    outcome          TEXT,                     -- AttemptOutcome as JSON once ended
    reason           TEXT,
    pid              INTEGER,
    lease_expires_at INTEGER,
    stop_cause       TEXT,                     -- cancelled | revoked | deadline
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    FOREIGN KEY (job_id, step) REFERENCES steps (job_id, name) ON DELETE CASCADE
);
CREATE INDEX attempts_lease ON attempts (status, lease_expires_at);
CREATE INDEX attempts_session ON attempts (session, status);
CREATE INDEX attempts_step ON attempts (job_id, step, number);

CREATE TABLE workers (
    session           TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    host              TEXT NOT NULL,
    profile           TEXT,
    version           TEXT NOT NULL,
    queues            TEXT NOT NULL,           -- JSON array
    tags              TEXT NOT NULL,           -- JSON array
    concurrency       INTEGER NOT NULL,
    status            TEXT NOT NULL,           -- active | draining | offline
    pid               INTEGER,
    registered_at     INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);
CREATE INDEX workers_name ON workers (name, registered_at);
