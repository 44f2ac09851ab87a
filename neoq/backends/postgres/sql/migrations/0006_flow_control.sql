-- neoq schema, version 6: flow control (docs/flow-control.md).

-- Priorities: higher runs first among a queue's due jobs. Most jobs keep the default 0, so the
-- claim index of non-zero priorities is partial: an enqueue of a priority-0 job writes no entry in
-- it, and neoq_jobs_due (queue, run_after, id) stays the index of priority-0 claims, of the next due
-- time and of expired leases. A claim reads three ranges in turn (above 0, 0, below 0), each from
-- its index in claim order, and stops at the first that has a job (claims.sql: claimed_job).
ALTER TABLE neoq_jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0
    CONSTRAINT neoq_jobs_priority_range CHECK (priority BETWEEN -100 AND 100);
CREATE INDEX neoq_jobs_due_priority ON neoq_jobs (queue, priority DESC, run_after, id)
    WHERE status = 'new' AND priority <> 0;

-- Paused queues: a claim of either mode takes no job of a queue named here (the claims read it in
-- the statement that locks the job), and a look at it says nothing is due, so its claim loops wait
-- for the resume's notification. Tiny, and read by key: one index probe per claim.
CREATE TABLE neoq_queue_pauses (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Snoozes (raise neoq.Snooze): attempts that asked to run again later, counted in neoq_attempts
-- like every attempt, and here too, so that they count neither as failures nor as retries.
ALTER TABLE neoq_jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

-- Unique for a period (Job.unique_for): the last enqueue of each queue and fingerprint made with a
-- unique_for, written in the enqueue's transaction. An enqueue whose unique_for reaches back past
-- that time is refused; the primary key makes concurrent enqueues of the same key take turns, so
-- exactly one of them gets in. Rows older than the retention of failed jobs are pruned.
CREATE TABLE neoq_unique_windows (
    queue       text NOT NULL,
    fingerprint text NOT NULL,
    enqueued_at timestamptz NOT NULL,
    unique_for  float8 NOT NULL,
    job_id      bigint NOT NULL,
    PRIMARY KEY (queue, fingerprint)
);

-- Global limits (Handler.global_limit). Transaction mode: the slots of a queue, numbered from 1 to
-- its limit; a claim locks a free one in its transaction (FOR UPDATE SKIP LOCKED) and holds it
-- until its settle commits or its session ends, so a dead process's slots are free at once.
CREATE TABLE neoq_slots (
    queue text NOT NULL,
    slot  integer NOT NULL,
    PRIMARY KEY (queue, slot)
);

-- Lease mode counts the live leases of the queue instead (a dead process's end with their lease),
-- but for ``done``: the caller's own jobs whose handlers returned and whose outcomes are on their way
-- (a lease's outcome is written in batches; once written, the job is no lease, so none counts twice).
-- VOLATILE, so its query takes a snapshot of its own, after the caller's advisory lock: the calling
-- statement's snapshot predates the lock, and would miss the leases of the fetch it waited for.
CREATE FUNCTION neoq_leased_count(of_queue text, done bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT count(*) FROM neoq_jobs j
            WHERE j.queue = of_queue AND j.status = 'new' AND j.lease_owner IS NOT NULL AND j.run_after > now()
              AND j.id <> ALL (done));
END
$$;

-- Rate limits (Handler.rate_limit): the recent starts of each queue and key. A claim takes a start
-- (neoq_rate_take) once it holds its job and before the job runs; with the window full, the job
-- goes back untouched (or, per key, put off until its key has room) and its attempt uncounted.
CREATE TABLE neoq_rate_starts (
    queue      text NOT NULL,
    key        text NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX neoq_rate_starts_window ON neoq_rate_starts (queue, key, started_at);

-- Take a start of (of_queue, of_key) if fewer than max_count started in the last per seconds:
-- return 0, else the seconds until the window has room. Takes of one key take turns on an
-- advisory lock held to the caller's commit (an autocommit statement: at once), and each query
-- below takes its own snapshot after it (VOLATILE), so no two takes fill the same room. Starts
-- that left the window are deleted as it slides.
CREATE FUNCTION neoq_rate_take(of_queue text, of_key text, max_count integer, per float8) RETURNS float8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken integer;
    oldest timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('neoq_rate:' || of_queue || ':' || of_key, 0));
    DELETE FROM neoq_rate_starts
    WHERE queue = of_queue AND key = of_key AND started_at <= clock_timestamp() - make_interval(secs => per);
    SELECT count(*), min(started_at) INTO taken, oldest
    FROM neoq_rate_starts WHERE queue = of_queue AND key = of_key;
    IF taken < max_count THEN
        INSERT INTO neoq_rate_starts (queue, key, started_at) VALUES (of_queue, of_key, clock_timestamp());
        RETURN 0;
    END IF;
    RETURN greatest(0.001, EXTRACT(EPOCH FROM oldest + make_interval(secs => per) - clock_timestamp()));
END
$$;
