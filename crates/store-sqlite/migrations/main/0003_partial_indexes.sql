-- Indexes that only hold what the hot paths look for. Every query on these indexes asks
-- for ready steps or running attempts; the full indexes also kept one entry per finished
-- step and attempt, so each claim and completion rewrote an entry it would never read
-- again and the indexes grew with history. Measured: fewer B-tree pages touched per job in
-- the single writer (bench server-capacity).

DROP INDEX steps_claim;
-- Claim order within one queue: CANDIDATES in claim.rs (state = 'ready' selects it).
CREATE INDEX steps_ready ON steps (queue, priority DESC, job_id, idx) WHERE state = 'ready';
-- Queue depths (fleet.rs) count running steps per queue.
CREATE INDEX steps_running ON steps (queue) WHERE state = 'running';

DROP INDEX attempts_lease;
-- Lease expiry (lease.rs).
CREATE INDEX attempts_lease ON attempts (lease_expires_at) WHERE status = 'running';

DROP INDEX attempts_session;
-- A session's running attempts (workers.rs: heartbeat, in-flight counts, supersession).
CREATE INDEX attempts_session ON attempts (session) WHERE status = 'running';
