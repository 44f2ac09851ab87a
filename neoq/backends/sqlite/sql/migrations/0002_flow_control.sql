-- neoq's SQLite schema, version 2: flow control (docs/flow-control.md).

-- Priorities: higher runs first among a queue's due jobs. Most jobs keep 0, so the claim index of
-- other priorities is partial: neoq_jobs_due stays the index of priority-0 claims and of the next
-- due time. A claim reads three ranges in turn (above 0, 0, below 0), each in claim order.
ALTER TABLE neoq_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100);
CREATE INDEX neoq_jobs_due_priority ON neoq_jobs (queue, priority DESC, run_after, id)
    WHERE status = 'new' AND priority <> 0;

-- Snoozes (raise neoq.Snooze): attempts that asked to run again later, neither failures nor retries.
ALTER TABLE neoq_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

-- Paused queues: a fetch takes no job of a queue named here (it reads it in its write transaction).
CREATE TABLE neoq_queue_pauses (
    queue     TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Unique for a period (Job.unique_for): the last enqueue of each queue and fingerprint made with a
-- unique_for, written in the enqueue's transaction (which holds the file's write lock: one at a time).
CREATE TABLE neoq_unique_windows (
    queue       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL,
    unique_for  REAL NOT NULL,
    job_id      INTEGER NOT NULL,
    PRIMARY KEY (queue, fingerprint)
) WITHOUT ROWID;

-- Rate limits (Handler.rate_limit): the recent starts of each queue and key.
CREATE TABLE neoq_rate_starts (
    queue      TEXT NOT NULL,
    key        TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX neoq_rate_starts_window ON neoq_rate_starts (queue, key, started_at);
