-- Fire times of schedules (issue 14): one row per schedule name and fire time, never two, so
-- a fire time starts at most one run across restarts and leader changes (two leaders
-- recording one fire time meet on the primary key). `outcome`: `run` (job_id: the job it
-- started, stored in the same transaction), `skipped` (overlap: skip), `missed` (older than
-- catchup). No foreign key to jobs: a run's job may be pruned while its fire stays
-- recorded. Additive: servers of schema 1 to 3 ignore it.
CREATE TABLE schedule_fires (
    schedule    text NOT NULL,
    fire_time   timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('run', 'skipped', 'missed')),
    job_id      uuid,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (schedule, fire_time)
);
