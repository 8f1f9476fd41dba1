-- Fire times of schedules (issue 14): one row per schedule name and fire time, never two, so
-- a fire time starts at most one run across restarts and leader changes. `outcome`: `run`
-- (job_id: the job it started, stored in the same transaction), `skipped` (overlap: skip),
-- `missed` (older than catchup). Times in ms since the epoch, as everywhere in this file.
-- No foreign key to jobs: a run's job may be pruned while its fire stays recorded.
CREATE TABLE schedule_fires (
    schedule    TEXT NOT NULL,
    fire_time   INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('run', 'skipped', 'missed')),
    job_id      TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, fire_time)
) WITHOUT ROWID;
