-- Indexes no query reads (issue 19, server capacity). `jobs_state`, `jobs_queue` and
-- `jobs_namespace` were meant for the job listing, but its filters are all optional
-- (`?N IS NULL OR ...`), so its plan walks the primary key newest first and never used them
-- (`plans.rs` checks that no query does). Each still cost the single writer B-tree work
-- on 36-character keys for every job: three inserts at submit, and a delete and an insert
-- in `jobs_state` at the claim and again at the end. Dropping an index rewrites no rows,
-- so the migration is instant on any store.
DROP INDEX IF EXISTS jobs_state;
DROP INDEX IF EXISTS jobs_queue;
DROP INDEX IF EXISTS jobs_namespace;
