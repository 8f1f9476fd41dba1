-- A worker's persistent instance id (kept in its workspace). Registering a live name held
-- by another instance is refused unless the worker asks to replace it (workers.rs).
-- NULL: a session registered before this column existed, or by a worker too old to send
-- one; such sessions supersede and are superseded as before.
ALTER TABLE workers ADD COLUMN instance_id TEXT;
