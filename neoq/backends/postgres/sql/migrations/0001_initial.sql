-- neoq schema, version 1.
--
-- Applied by neoq.backends.postgres.migrations inside one transaction under an advisory lock,
-- and recorded in neoq_migrations. Never edit a released migration: add the next number.

-- One row per job. Jobs are only ever updated by their claim's transaction (which holds the
-- row lock from FOR UPDATE SKIP LOCKED) or by management calls on jobs nobody holds.
CREATE TABLE neoq_jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       text NOT NULL,
    fingerprint text NOT NULL,
    -- json, not jsonb: the payload's text is kept exactly as given, so numbers such as 1e16 or
    -- -0.0 and key order round-trip unchanged (jsonb would normalise them).
    payload     json NOT NULL,
    status      text NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'processed', 'failed', 'cancelled')),
    run_after   timestamptz NOT NULL DEFAULT now(),
    deadline    timestamptz,
    max_retries integer CHECK (max_retries >= 0),
    retries     integer NOT NULL DEFAULT 0,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- When the job last became processed, failed or cancelled; what prune() compares.
    finished_at timestamptz
);

-- The database, not a check-then-insert, decides uniqueness among waiting jobs.
CREATE UNIQUE INDEX neoq_jobs_fingerprint_new ON neoq_jobs (queue, fingerprint) WHERE status = 'new';

-- The claim query: due jobs of one queue in (run_after, id) order; also gives the next due time.
CREATE INDEX neoq_jobs_due ON neoq_jobs (queue, run_after, id) WHERE status = 'new';

-- prune(): finished jobs by age.
CREATE INDEX neoq_jobs_finished ON neoq_jobs (finished_at) WHERE status <> 'new';

-- Attempt counters live apart from the job row: the claim's transaction holds the job row's
-- lock, and the counter has to be committed before the handler runs (so a worker that dies
-- mid-attempt still counts), which is a write another connection makes at the same time.
CREATE TABLE neoq_attempts (
    job_id   bigint PRIMARY KEY,
    attempts integer NOT NULL,
    ran_at   timestamptz NOT NULL
);

-- cancel_job() of a running job cannot touch its locked row: it leaves a request here (and
-- notifies the holder). The holder's settle, or the next claim, turns it into CANCELLED.
CREATE TABLE neoq_cancellations (
    job_id       bigint PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Cron ticks: the primary key makes each (schedule, tick) stored once across all processes.
CREATE TABLE neoq_ticks (
    key         text NOT NULL,
    tick        timestamptz NOT NULL,
    job_id      bigint,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, tick)
);
