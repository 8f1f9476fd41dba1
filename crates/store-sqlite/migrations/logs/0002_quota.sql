-- What was not kept of each attempt's output, by cause, and the live bytes the total log
-- quota is counted in (issue 10). Rows written before keep 0 in the new columns.

-- bytes_dropped: dropped by the worker before sending (the largest total it reported).
-- bytes_pruned: deleted after the job finished, to keep the total log quota.
-- bytes_refused: new output not stored because the quota was full.
ALTER TABLE log_attempts ADD COLUMN bytes_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_attempts ADD COLUMN bytes_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_attempts ADD COLUMN bytes_refused INTEGER NOT NULL DEFAULT 0;

-- Live log bytes (the sum of log_chunks.size), kept by triggers so every path that adds,
-- cuts or deletes chunks counts. Not the file size: SQLite files do not shrink on delete.
CREATE TABLE log_usage (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    live_bytes INTEGER NOT NULL
);
INSERT INTO log_usage (id, live_bytes) SELECT 1, COALESCE(SUM(size), 0) FROM log_chunks;

CREATE TRIGGER log_chunks_live_insert AFTER INSERT ON log_chunks
BEGIN
    UPDATE log_usage SET live_bytes = live_bytes + NEW.size WHERE id = 1;
END;
CREATE TRIGGER log_chunks_live_update AFTER UPDATE OF size ON log_chunks WHEN NEW.size <> OLD.size
BEGIN
    UPDATE log_usage SET live_bytes = live_bytes + NEW.size - OLD.size WHERE id = 1;
END;
CREATE TRIGGER log_chunks_live_delete AFTER DELETE ON log_chunks
BEGIN
    UPDATE log_usage SET live_bytes = live_bytes - OLD.size WHERE id = 1;
END;
