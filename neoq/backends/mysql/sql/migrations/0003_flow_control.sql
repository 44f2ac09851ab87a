-- neoq schema for MySQL/MariaDB, version 3: flow control (docs/flow-control.md; flow.py).
--
-- Paused queues: one row each, read by every claim (lease fetch and transaction claim) in the
-- statement that locks the job, and by the probe that looks at an idle queue.
CREATE TABLE neoq_queue_pauses (
    queue     VARBINARY(512) NOT NULL PRIMARY KEY,
    paused_at DATETIME(6) NOT NULL
) ENGINE = InnoDB;

-- Job.unique_for: the last enqueue of each queue and fingerprint that had one. The enqueue's
-- transaction locks the row (INSERT ... ON DUPLICATE KEY UPDATE), so concurrent enqueues of one
-- key take turns on it; a job enqueued within the window of the row's holder is refused.
CREATE TABLE neoq_unique_windows (
    queue       VARBINARY(512) NOT NULL,
    fingerprint VARBINARY(1024) NOT NULL,
    enqueued_at DATETIME(6) NOT NULL,
    unique_for  DOUBLE NOT NULL,
    job_id      BIGINT UNSIGNED NULL,
    PRIMARY KEY (queue, fingerprint)
) ENGINE = InnoDB;

-- Handler.rate_limit: one row per queue and key (rate_key: the key as given, or a digest of a
-- long one), locked by each take of a start so that takes of one window go one at a time across
-- processes; the starts of the last window beside it.
CREATE TABLE neoq_rate_windows (
    queue    VARBINARY(512) NOT NULL,
    rate_key VARBINARY(255) NOT NULL,
    PRIMARY KEY (queue, rate_key)
) ENGINE = InnoDB;
CREATE TABLE neoq_rate_starts (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue      VARBINARY(512) NOT NULL,
    rate_key   VARBINARY(255) NOT NULL,
    started_at DATETIME(6) NOT NULL,
    KEY neoq_rate_starts_window (queue, rate_key, started_at)
) ENGINE = InnoDB;

-- Handler.global_limit: slots 1..limit of each limited queue. A transaction-mode claim locks a
-- free slot (FOR UPDATE SKIP LOCKED) in the claim's transaction, so the settle's COMMIT frees it,
-- and so does the end of a dead worker's session. Lease mode locks the queue's slot 0 while its
-- fetch counts the live leases, so that fetches of a limited queue take turns across processes.
CREATE TABLE neoq_slots (
    queue VARBINARY(512) NOT NULL,
    slot  INT NOT NULL,
    PRIMARY KEY (queue, slot)
) ENGINE = InnoDB;
