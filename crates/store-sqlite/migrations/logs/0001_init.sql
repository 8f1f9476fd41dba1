-- Log chunks, kept in their own file so large output never delays claims.

-- size is the stored length of data; a chunk dropped by the log cap keeps its row with
-- empty data (size 0) so a resent copy is still recognised as a duplicate.
CREATE TABLE log_chunks (
    cursor         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         TEXT NOT NULL,
    step           TEXT NOT NULL,
    attempt_id     INTEGER NOT NULL,
    attempt_number INTEGER NOT NULL,
    stream         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    data           BLOB NOT NULL,
    UNIQUE (attempt_id, stream, seq)
);
CREATE INDEX log_chunks_job ON log_chunks (job_id, cursor);
CREATE INDEX log_chunks_attempt ON log_chunks (attempt_id, cursor);

CREATE TABLE log_attempts (
    attempt_id INTEGER PRIMARY KEY,
    job_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    bytes_kept INTEGER NOT NULL DEFAULT 0,
    bytes_cut  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX log_attempts_job ON log_attempts (job_id);
