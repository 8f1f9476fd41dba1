-- Namespaces (issue 15): every job, step, worker, paused queue, key revoke and schedule fire
-- belongs to one; rows written before this migration are in `default` (a constant default:
-- adding the column rewrites no row). Idempotency keys, live worker names, paused queues,
-- key revokes and fire times are unique per namespace. Older servers would look up keys
-- and names across namespaces: this version is their floor (min_compatible, schema.rs).

ALTER TABLE jobs ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_namespace ON jobs (namespace, id);

-- Copied from the job, as queue and priority are, so the claim reads one index.
ALTER TABLE steps ADD COLUMN namespace text NOT NULL DEFAULT 'default';
DROP INDEX steps_ready;
CREATE INDEX steps_ready ON steps (namespace, queue, priority DESC, job_id, idx) WHERE state = 'ready';
DROP INDEX steps_running;
CREATE INDEX steps_running ON steps (namespace, queue) WHERE state = 'running';

ALTER TABLE workers ADD COLUMN namespace text NOT NULL DEFAULT 'default';
DROP INDEX workers_name;
CREATE INDEX workers_name ON workers (namespace, name, registered_at);
DROP INDEX workers_live_name;
CREATE UNIQUE INDEX workers_live_name ON workers (namespace, name) WHERE status <> 'offline';

ALTER TABLE paused_queues ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE paused_queues DROP CONSTRAINT paused_queues_pkey;
ALTER TABLE paused_queues ADD PRIMARY KEY (namespace, queue);

ALTER TABLE key_revokes ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE key_revokes DROP CONSTRAINT key_revokes_pkey;
ALTER TABLE key_revokes ADD PRIMARY KEY (namespace, idempotency_key);

ALTER TABLE schedule_fires ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE schedule_fires DROP CONSTRAINT schedule_fires_pkey;
ALTER TABLE schedule_fires ADD PRIMARY KEY (namespace, schedule, fire_time);
