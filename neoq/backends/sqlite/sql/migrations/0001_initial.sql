-- neoq's SQLite schema, version 1.
--
-- Applied by neoq.backends.sqlite.migrations inside one BEGIN IMMEDIATE transaction (the file's
-- write lock is the migration lock) and recorded in neoq_migrations. Never edit a released
-- migration: add the next number. Times are integer microseconds since 1970 (UTC): exact, and
-- ordered as numbers.

-- One row per job. A running job is leased (the lease engine, neoq/backends/lease): it stays
-- 'new', its run_after is the lease's expiry, lease_owner names the holder and lease_token (the
-- fencing token) grows at every lease. So a job whose holder died is simply due again.
CREATE TABLE neoq_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused, even after prune
    queue       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload     TEXT NOT NULL,                      -- the JSON text, kept as given
    status      TEXT NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'processed', 'failed', 'cancelled')),
    run_after   INTEGER NOT NULL,
    deadline    INTEGER,
    max_retries INTEGER CHECK (max_retries >= 0),
    retries     INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    ran_at      INTEGER,
    finished_at INTEGER,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    result      TEXT,                               -- a processed attempt's return value, JSON text
    traceback   TEXT,                               -- the last failed attempt's traceback
    progress    REAL,                               -- the running attempt's latest report, 0 to 1
    progress_note TEXT
);

-- The file, not a check-then-insert, decides uniqueness among waiting and running jobs.
CREATE UNIQUE INDEX neoq_jobs_fingerprint_new ON neoq_jobs (queue, fingerprint) WHERE status = 'new';

-- The claim: due jobs of one queue in (run_after, id) order; also the next due time (a lease's
-- expiry included).
CREATE INDEX neoq_jobs_due ON neoq_jobs (queue, run_after, id) WHERE status = 'new';

-- stats() and list_jobs(queue=..., status=...).
CREATE INDEX neoq_jobs_queue_status ON neoq_jobs (queue, status);

-- prune(): finished jobs by age.
CREATE INDEX neoq_jobs_finished ON neoq_jobs (finished_at) WHERE status <> 'new';

-- Cron ticks: the primary key stores each (schedule, tick) once across all processes.
CREATE TABLE neoq_ticks (
    key         TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    job_id      INTEGER,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (key, tick)
) WITHOUT ROWID;
