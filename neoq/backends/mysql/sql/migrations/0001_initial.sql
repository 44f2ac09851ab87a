-- neoq schema for MySQL 8.0+ and MariaDB 10.6+, version 1.
--
-- Applied by neoq.backends.mysql.migrations under GET_LOCK, one statement at a time (MySQL's DDL
-- commits as it goes), and recorded in neoq_migrations. Never edit a released migration: add the
-- next number. Times are DATETIME(6) in UTC (every neoq session sets time_zone = '+00:00').
-- Names and fingerprints are VARBINARY: compared byte for byte, so 'q', 'Q' and 'q ' are three
-- queues (a _bin collation of VARCHAR would pad: 'q' = 'q ').

CREATE TABLE neoq_jobs (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue       VARBINARY(512) NOT NULL,
    fingerprint VARBINARY(1024) NOT NULL,
    -- The payload's JSON text as given (LONGTEXT: MariaDB's JSON is an alias of it).
    payload     LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    status      VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'new',
    run_after   DATETIME(6) NOT NULL,
    deadline    DATETIME(6) NULL,
    max_retries INT NULL,
    retries     INT NOT NULL DEFAULT 0,
    -- Attempts counted by lease-mode claims (transaction-mode claims count theirs in neoq_attempts).
    attempts    INT NOT NULL DEFAULT 0,
    ran_at      DATETIME(6) NULL,
    error       LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    -- What a job hands back: the handler's return value as JSON text, the last failure's traceback.
    result      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    traceback   LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_at  DATETIME(6) NOT NULL,
    finished_at DATETIME(6) NULL,
    -- Lease mode: a leased job stays 'new', its run_after the lease's expiry; the fencing token
    -- grows at every lease and is never reset; the owner is NULL when no lease is held.
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_owner VARBINARY(255) NULL,
    -- 1 while the job is waiting or running, NULL once finished: the unique index below holds
    -- (queue, fingerprint) once among live jobs, and NULLs never collide.
    live        TINYINT AS (IF(status = 'new', 1, NULL)) STORED,
    UNIQUE KEY neoq_jobs_unique (queue, fingerprint, live),
    KEY neoq_jobs_due (queue, status, run_after, id),
    KEY neoq_jobs_finished (status, finished_at)
) ENGINE = InnoDB;

-- Transaction mode: a claim holds its job's row lock until its settle commits, and the settle
-- counts the attempt (neoq_jobs.attempts) in that transaction. While it runs, the claim's marker
-- names its session here: a MEMORY table, written at once and never rolled back, so that an
-- attempt whose worker died leaves its marker behind; the next claim of the job counts that
-- attempt here (committed before its handler runs) and replaces the marker. A marker whose
-- session is alive makes the job read RUNNING. (Lost if the server restarts: docs/mysql.md.)
-- An attempt ended from outside (a timeout: its session is killed, its outcome written by another
-- connection) is fenced first: holder 0 and fenced_at set; claims leave the job alone for 30 s
-- while the outcome is written.
CREATE TABLE neoq_claims (
    job_id    BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    holder    BIGINT UNSIGNED NOT NULL,
    ran_at    DATETIME(6) NOT NULL,
    fenced_at DATETIME(6) NULL
) ENGINE = MEMORY;

-- Attempts that ended without a settle (transaction mode), counted by the next claim.
CREATE TABLE neoq_attempts (
    job_id   BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    attempts INT NOT NULL,
    ran_at   DATETIME(6) NOT NULL
) ENGINE = InnoDB;

-- Progress reports of running jobs, apart from the job row: a transaction-mode claim holds the
-- row's lock while its handler runs, so a report is an autocommit upsert here from the pool
-- (fenced: by the claim's marker, or by the lease token). Kept after the job finishes;
-- retry_job and prune delete it.
CREATE TABLE neoq_progress (
    job_id     BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    fraction   DOUBLE NOT NULL,
    note       LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    updated_at DATETIME(6) NOT NULL
) ENGINE = InnoDB;

-- cancel_job() of a job a transaction-mode claim holds cannot touch its locked row: it leaves a
-- request here; the holder's process polls for requests on the jobs it holds.
CREATE TABLE neoq_cancellations (
    job_id       BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    requested_at DATETIME(6) NOT NULL
) ENGINE = InnoDB;

-- Cron ticks: the primary key stores each (schedule, tick) once across all processes.
CREATE TABLE neoq_ticks (
    tick_key    VARBINARY(1024) NOT NULL,
    tick        DATETIME(6) NOT NULL,
    job_id      BIGINT UNSIGNED NULL,
    recorded_at DATETIME(6) NOT NULL,
    PRIMARY KEY (tick_key, tick)
) ENGINE = InnoDB;
