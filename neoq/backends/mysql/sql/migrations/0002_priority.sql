-- neoq schema for MySQL/MariaDB, version 2: priorities (Job.priority, capability "priority") and
-- snoozes (raise neoq.Snooze, capability "snooze": attempts that asked to run again later, counted
-- here too, so that they count neither as failures nor as retries).
--
-- Among a queue's due jobs the claim order is (priority descending, run_after, id). The claim index
-- puts priority first, descending (MySQL 8 and MariaDB 10.8+ keep descending index parts; older
-- MariaDB sorts the queue's due rows instead). neoq_jobs_due stays the index of the next due time.
ALTER TABLE neoq_jobs ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE neoq_jobs ADD COLUMN snoozes INT NOT NULL DEFAULT 0;
CREATE INDEX neoq_jobs_claim ON neoq_jobs (queue, status, priority DESC, run_after, id);
