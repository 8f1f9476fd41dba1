-- rota's control plane on PostgreSQL: jobs, steps, attempts, worker sessions, fleet state,
-- credentials and log chunks (in tables of their own). Ids are uuids, attempt ids come from
-- a sequence (fencing ids: never reused, even after pruning), times are timestamptz.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,          -- UUID v7: sorts by submission time
    name            text,
    queue           text NOT NULL,
    priority        integer NOT NULL,
    target_host     text,
    target_tags     text[] NOT NULL,
    idempotency_key text UNIQUE,
    deadline        timestamptz,
    spec            jsonb NOT NULL,            -- the whole JobSpec
    state           text NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- queue, priority and target are copied from the job so the claim reads one index.
CREATE TABLE steps (
    job_id         uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx            integer NOT NULL,           -- position in the document
    name           text NOT NULL,
    state          text NOT NULL,
    reason         text,
    run_after      timestamptz,
    attempts_count integer NOT NULL DEFAULT 0,
    log_cap        bigint,                     -- NULL = the default cap
    queue          text NOT NULL,
    priority       integer NOT NULL,
    target_host    text,
    target_tags    text[] NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE UNIQUE INDEX steps_job_idx ON steps (job_id, idx);
-- Claim order within one queue; only ready steps are in it (claim.rs).
CREATE INDEX steps_ready ON steps (queue, priority DESC, job_id, idx) WHERE state = 'ready';
-- Queue depths count running steps per queue (fleet.rs).
CREATE INDEX steps_running ON steps (queue) WHERE state = 'running';

CREATE SEQUENCE attempt_ids;
CREATE TABLE attempts (
    id               bigint PRIMARY KEY DEFAULT nextval('attempt_ids'),
    job_id           uuid NOT NULL,
    step             text NOT NULL,
    number           integer NOT NULL,
    session          uuid NOT NULL,
    worker_name      text NOT NULL,
    status           text NOT NULL,
    outcome          jsonb,                    -- AttemptOutcome once ended
    reason           text,
    pid              bigint,
    lease_expires_at timestamptz,
    stop_cause       text,                     -- cancelled | revoked | deadline
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    FOREIGN KEY (job_id, step) REFERENCES steps (job_id, name) ON DELETE CASCADE
);
ALTER SEQUENCE attempt_ids OWNED BY attempts.id;
CREATE INDEX attempts_job ON attempts (job_id, step, number);
CREATE INDEX attempts_lease ON attempts (lease_expires_at) WHERE status = 'running';
CREATE INDEX attempts_session ON attempts (session) WHERE status = 'running';
CREATE INDEX attempts_running_job ON attempts (job_id) WHERE status = 'running';

CREATE TABLE workers (
    session           uuid PRIMARY KEY,
    name              text NOT NULL,
    token_hash        text NOT NULL UNIQUE,
    host              text NOT NULL,
    profile           text,
    version           text NOT NULL,
    queues            text[] NOT NULL,
    tags              text[] NOT NULL,
    concurrency       integer NOT NULL,
    status            text NOT NULL,           -- active | draining | offline
    pid               bigint,
    registered_at     timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    instance_id       text
);
CREATE INDEX workers_name ON workers (name, registered_at);
-- One live session per name, whichever server registered it (workers.rs).
CREATE UNIQUE INDEX workers_live_name ON workers (name) WHERE status <> 'offline';

-- Fleet control: durable revokes (of job ids and of idempotency keys) and paused queues.
CREATE TABLE revokes (
    job_id     uuid PRIMARY KEY,
    terminate  boolean NOT NULL,
    signal     integer,
    expires_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX revokes_expiry ON revokes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE key_revokes (
    idempotency_key text PRIMARY KEY,
    terminate       boolean NOT NULL,
    signal          integer,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL
);
CREATE INDEX key_revokes_expiry ON key_revokes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE paused_queues (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);

-- The SHA-256 hashes (hex) of the admin and join tokens every server shares. Never a token.
CREATE TABLE credentials (
    kind       text PRIMARY KEY CHECK (kind IN ('admin', 'join')),
    hash       text NOT NULL CHECK (hash <> ''),
    created_at timestamptz NOT NULL,
    rotated_at timestamptz
);

-- Log chunks, apart from the job tables so large output never slows claims. size is the
-- stored length of data; a chunk dropped by the log cap keeps its row with empty data so a
-- resent copy is still recognised as a duplicate.
CREATE SEQUENCE log_cursors;
CREATE TABLE log_chunks (
    cursor         bigint PRIMARY KEY DEFAULT nextval('log_cursors'),
    job_id         uuid NOT NULL,
    step           text NOT NULL,
    attempt_id     bigint NOT NULL,
    attempt_number integer NOT NULL,
    stream         text NOT NULL,
    seq            bigint NOT NULL,
    size           bigint NOT NULL,
    data           bytea NOT NULL,
    UNIQUE (attempt_id, stream, seq)
);
ALTER SEQUENCE log_cursors OWNED BY log_chunks.cursor;
CREATE INDEX log_chunks_job ON log_chunks (job_id, cursor);
CREATE INDEX log_chunks_attempt ON log_chunks (attempt_id, cursor) WHERE size > 0;

-- What was kept and not kept of each attempt's output: cut by the cap, dropped by the
-- worker before sending (the largest total it reported), pruned after the job finished to
-- keep the total log quota, refused because the quota was full.
CREATE TABLE log_attempts (
    attempt_id    bigint PRIMARY KEY,
    job_id        uuid NOT NULL,
    step          text NOT NULL,
    bytes_kept    bigint NOT NULL DEFAULT 0,
    bytes_cut     bigint NOT NULL DEFAULT 0,
    bytes_dropped bigint NOT NULL DEFAULT 0,
    bytes_pruned  bigint NOT NULL DEFAULT 0,
    bytes_refused bigint NOT NULL DEFAULT 0
);
CREATE INDEX log_attempts_job ON log_attempts (job_id);

-- One row per running server process (its leadership connection's heartbeat): who leads
-- (joined with pg_locks on backend_pid) and whether other servers serve. Rows of servers
-- not heard from for a day are deleted by any heartbeat.
CREATE TABLE servers (
    id          uuid PRIMARY KEY,
    host        text NOT NULL,
    pid         bigint NOT NULL,
    started_at  timestamptz NOT NULL,
    backend_pid integer NOT NULL,
    last_seen   timestamptz NOT NULL
);
