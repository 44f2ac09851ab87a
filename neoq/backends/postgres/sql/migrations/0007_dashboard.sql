-- neoq schema, version 7: what the dashboard reads (neoq.backends.postgres.search).

-- Each worker process announces itself here and beats; readers forget the ones that stopped beating.
CREATE TABLE neoq_workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      json NOT NULL,
    -- its cron schedules: {queue: [spec, timezone]}
    schedules   json NOT NULL DEFAULT '{}',
    running     integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- Keyset pages of one status or one queue, newest first, without scanning the others.
CREATE INDEX neoq_jobs_status_id ON neoq_jobs (status, id);
CREATE INDEX neoq_jobs_queue_id ON neoq_jobs (queue, id);

-- The jobs running in lease mode (a live lease), found without a scan of every waiting job.
CREATE INDEX neoq_jobs_leased ON neoq_jobs (id) WHERE status = 'new' AND lease_owner IS NOT NULL;

-- Counts of finished jobs by queue and status on a large table come from these statistics
-- (ANALYZE, autovacuum) instead of a scan of every row.
CREATE STATISTICS neoq_jobs_queue_status (mcv) ON queue, status FROM neoq_jobs;
