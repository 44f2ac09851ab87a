-- Named queries of the PostgreSQL backend, loaded once by neoq.backends.postgres.queries.
--
-- A block starts with "-- name: <name>" and runs to the next one. Every value is a bound
-- parameter (%(name)s); the notification channel is a parameter of pg_notify().
-- A line "-- include: <name>" stands for the text of the block of that name (defined above it).
-- Rows of jobs start with the ten columns neoq.backends.postgres.rows reads, in its order.

-- name: due_job
-- A due job of a queue as a claim locks it; each user adds its priority range, order and lock.
SELECT j.id, j.queue, j.fingerprint, j.payload, j.run_after, j.deadline, j.max_retries, j.retries,
       j.error, j.created_at, j.xmax AS locker, j.xmin AS creator, j.priority, j.snoozes
FROM neoq_jobs j
WHERE j.queue = %(queue)s AND j.status = 'new' AND j.run_after <= now()

-- name: not_paused
-- The claim's one-time filter (checked once, before any range is read): no job while the queue
-- is paused. pause_queue waits for the statements that read it before the pause (flow.py).
NOT EXISTS (SELECT 1 FROM neoq_queue_pauses p WHERE p.queue = %(queue)s)

-- name: job_ranges
-- The CTEs of a claim's job (the start of claimed_job), after its WITH. The claim order is
-- (priority DESC, run_after, id), read as three ranges (migration 0006): jobs above priority 0 from
-- neoq_jobs_due_priority, then priority 0 from neoq_jobs_due, then below 0. A CTE is read only as
-- far as its reader asks, so a range is locked and read only when the ranges before it had no job.
high AS (
-- include: due_job
      AND j.priority > 0
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), plain AS (
-- include: due_job
      AND j.priority = 0
    ORDER BY j.run_after, j.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), low AS (
-- include: due_job
      AND j.priority < 0
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)

-- name: claimed_columns
-- What a claim returns of its job (see claimed_job).
SELECT job.id, job.queue, job.fingerprint, job.payload, job.run_after, job.deadline, job.max_retries,
       job.retries, job.error, job.created_at,
       EXISTS (SELECT 1 FROM neoq_cancellations c WHERE c.job_id = job.id) AS cancel_requested,
       neoq_attempts_of(job.id) AS attempts,
       now() AS claimed_at,
       coalesce(neoq_locker_status(job.locker, job.creator, pg_current_xact_id()::text::bigint) = 'aborted', false) AS lost,
       job.priority, job.snoozes

-- name: claimed_job
-- The start of claim and claim_probe: the next due job of a queue locked, with its attempts so
-- far (the row lock makes them this claim's to count), the moment of the claim, which becomes the
-- attempt's ran_at (now(): the claim's transaction began in the same round trip, and get_job reads
-- that time from pg_stat_activity while the job runs), and ``lost``: whether an earlier claim of it
-- ended without a settle (its transaction id is still the row's xmax, read before this claim's
-- lock replaces it; see migration 0003 and claims.TransactionClaims._take).
WITH
-- include: job_ranges
, job AS (
    SELECT *
    FROM (SELECT * FROM high UNION ALL SELECT * FROM plain UNION ALL SELECT * FROM low) r
    WHERE
-- include: not_paused
    LIMIT 1
)
-- include: claimed_columns

-- name: claimed_job_limited
-- claimed_job for a queue with a global limit (Handler.global_limit): one of the queue's slots
-- (neoq_slots, numbered from 1 to the limit) is locked first, and held by the claim's transaction
-- until its settle commits or its session ends; with every slot held, no job is taken (the check
-- is a one-time filter, before any range is read). The slot is freed when the transaction ends.
WITH slot AS (
    SELECT s.slot FROM neoq_slots s
    WHERE s.queue = %(queue)s AND s.slot <= %(global_limit)s
    ORDER BY s.slot
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
-- include: job_ranges
, job AS (
    SELECT *
    FROM (SELECT * FROM high UNION ALL SELECT * FROM plain UNION ALL SELECT * FROM low) r
    WHERE EXISTS (SELECT 1 FROM slot) AND
-- include: not_paused
    LIMIT 1
)
-- include: claimed_columns

-- name: claim
-- Lock the next due job of a queue; no row when none is due (claim_idle then says more).
-- include: claimed_job
FROM job;

-- name: probe_columns
-- What claim_probe adds: whether more jobs are due (held by others or not), so that it wakes one
-- more waiting loop only then, and, when none is, when the queue's next job comes due (seconds
-- from now, by the database's clock; as claim_idle's), so that the look's answer is complete
-- (neoq.waiting.Look).
     , EXISTS (SELECT 1 FROM neoq_jobs b
               WHERE b.queue = %(queue)s AND b.status = 'new' AND b.run_after <= now() AND b.id <> job.id
               ORDER BY b.run_after LIMIT 1) AS more,
       (SELECT EXTRACT(EPOCH FROM min(n.run_after) - clock_timestamp())::float8
        FROM neoq_jobs n
        WHERE n.queue = %(queue)s AND n.status = 'new' AND n.run_after > now()) AS next_due

-- name: claim_plain
-- claim for a queue none of whose due jobs has a priority above 0 (the usual queue): one range of
-- neoq_jobs_due in (run_after, id) order, the claim order among priority-0 jobs, so the two ranges
-- of non-zero priorities (claimed_job) are neither planned nor read. Both checks are one-time
-- filters, read before the range: with the queue paused, or a job above priority 0 due (held by
-- others or not), no row comes back, and so it does when only jobs below 0 are due; the caller
-- then sends claim (claims.TransactionClaims._settle_and_claim).
WITH job AS (
-- include: due_job
      AND j.priority = 0
      AND
-- include: not_paused
      AND NOT EXISTS (SELECT 1 FROM neoq_jobs h
                      WHERE h.queue = %(queue)s AND h.status = 'new' AND h.priority > 0 AND h.run_after <= now())
    ORDER BY j.run_after, j.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
-- include: claimed_columns
FROM job;

-- name: claim_probe
-- The claim of a claim loop that was waiting (a look), with probe_columns.
-- include: claimed_job
-- include: probe_columns
FROM job;

-- name: claim_limited
-- claim, for a queue with a global limit.
-- include: claimed_job_limited
FROM job;

-- name: claim_probe_limited
-- claim_probe, for a queue with a global limit.
-- include: claimed_job_limited
-- include: probe_columns
FROM job;

-- name: claim_idle
-- After a claim found nothing due, in its transaction: when the queue's next job comes due
-- (seconds from now, by the database's clock), and whether due jobs exist that others hold.
-- Neither while the queue is paused: its claim loops wait for the resume's notification.
SELECT (SELECT EXTRACT(EPOCH FROM min(n.run_after) - clock_timestamp())::float8
        FROM neoq_jobs n
        WHERE n.queue = %(queue)s AND n.status = 'new' AND n.run_after > now() AND NOT p.paused) AS next_due,
       -- ORDER BY ... LIMIT 1 keeps the planner on the neoq_jobs_due index (a bare EXISTS may pick a
       -- sequential scan, which an idle probe would then pay for on a large table).
       NOT p.paused
       AND EXISTS (SELECT 1 FROM neoq_jobs b WHERE b.queue = %(queue)s AND b.status = 'new' AND b.run_after <= now()
                   ORDER BY b.run_after LIMIT 1) AS busy
FROM (SELECT EXISTS (SELECT 1 FROM neoq_queue_pauses q WHERE q.queue = %(queue)s) AS paused) p;

-- name: count_attempt
-- Counts an attempt that ended without a settle (the claim saw it: ``lost``). Runs on a second
-- connection, in a transaction of its own, sent before the handler starts, so it is committed
-- even if this attempt dies too (see settles.Settles.send_count); returns the count.
INSERT INTO neoq_attempts AS a (job_id, attempts, ran_at)
VALUES (%(id)s, 1, %(ran_at)s::timestamptz)
ON CONFLICT (job_id) DO UPDATE SET attempts = a.attempts + 1, ran_at = excluded.ran_at
RETURNING a.attempts;

-- name: count_unsettled
-- An attempt whose handler ended the claim's transaction itself, so no settle can count it:
-- counted here, in a transaction of its own, unless the row still shows the rolled-back lock
-- (the next claim counts that one as lost).
INSERT INTO neoq_attempts AS a (job_id, attempts, ran_at)
SELECT j.id, 1, %(ran_at)s::timestamptz
FROM neoq_jobs j
WHERE j.id = %(id)s
  AND coalesce(neoq_locker_status(j.xmax, j.xmin, pg_current_xact_id()::text::bigint), '') <> 'aborted'
ON CONFLICT (job_id) DO UPDATE SET attempts = a.attempts + 1, ran_at = excluded.ran_at;

-- name: settle
-- Store an attempt's outcome in the claim's transaction (``snoozed``: 1 for raise neoq.Snooze,
-- else 0), and add ``counted`` to its attempts
-- (1; for a job cancelled before it started, 0, or 1 for an earlier attempt the claim saw lost).
-- A cancellation request that arrived while the job ran turns a retry (or a put-back at
-- shutdown) into CANCELLED.
WITH counted AS (
    INSERT INTO neoq_attempts AS a (job_id, attempts, ran_at)
    SELECT %(id)s::bigint, %(counted)s::integer, %(ran_at)s::timestamptz WHERE %(counted)s::integer > 0
    ON CONFLICT (job_id) DO UPDATE SET attempts = a.attempts + excluded.attempts, ran_at = excluded.ran_at
), cancel AS (
    DELETE FROM neoq_cancellations WHERE job_id = %(id)s RETURNING job_id
), outcome AS (
    SELECT CASE WHEN %(status)s::text = 'new' AND EXISTS (SELECT 1 FROM cancel) THEN 'cancelled'
                ELSE %(status)s::text END AS status
)
-- finished_at is clock_timestamp(), the end of the attempt: now() is the claim's start.
-- lease_owner is cleared, so that a retry waiting here never reads as leased (running).
-- traceback: a failure's; none with the job's error unchanged (a cancellation or a put-back of an
-- attempt that did not fail) keeps the stored one. result: a processed attempt's return value.
UPDATE neoq_jobs j
SET status = o.status,
    error = %(error)s,
    traceback = CASE WHEN %(traceback)s::text IS NULL AND %(error)s::text IS NOT DISTINCT FROM j.error
                     THEN j.traceback ELSE %(traceback)s::text END,
    result = %(result)s::json,
    run_after = coalesce(%(run_after)s, j.run_after),
    retries = coalesce(%(retries)s, j.retries),
    snoozes = j.snoozes + %(snoozed)s::integer,
    finished_at = CASE WHEN o.status = 'new' THEN NULL ELSE clock_timestamp() END,
    lease_owner = NULL
FROM outcome o
WHERE j.id = %(id)s
RETURNING j.status, CASE WHEN j.status = 'new' THEN pg_notify(%(channel)s, 'q:' || j.queue) IS NULL END;

-- name: settle_processed
-- A processed attempt whose holder saw no cancellation request (settle removes one), counted;
-- finished now (clock_timestamp(): now() is when the claim's transaction began).
WITH counted AS (
    INSERT INTO neoq_attempts AS a (job_id, attempts, ran_at) VALUES (%(id)s, 1, %(ran_at)s::timestamptz)
    ON CONFLICT (job_id) DO UPDATE SET attempts = a.attempts + 1, ran_at = excluded.ran_at
)
UPDATE neoq_jobs SET status = 'processed', error = NULL, traceback = NULL, finished_at = clock_timestamp()
WHERE id = %(id)s;

-- name: enqueue
-- Insert a batch in one statement; each row notifies its queue (PostgreSQL folds identical
-- notifications of one transaction, and delivers them only on commit).
WITH ins AS (
    INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, deadline, max_retries, priority)
    SELECT t.queue, t.fingerprint, t.payload::json, coalesce(t.run_after, now()), t.deadline, t.max_retries,
           t.priority
    FROM unnest(%(queues)s::text[], %(fingerprints)s::text[], %(payloads)s::text[],
                %(run_afters)s::timestamptz[], %(deadlines)s::timestamptz[], %(max_retries)s::integer[],
                %(priorities)s::smallint[])
         WITH ORDINALITY AS t(queue, fingerprint, payload, run_after, deadline, max_retries, priority, ord)
    ORDER BY t.ord
    RETURNING id, queue
)
SELECT ins.id, pg_notify(%(channel)s, 'q:' || ins.queue) IS NULL FROM ins ORDER BY ins.id;

-- name: enqueue_one
-- One job (enqueue() called with a single job): the same as enqueue, without the arrays, and the
-- notification sent from RETURNING (no CTE to scan).
INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, deadline, max_retries, priority)
VALUES (%(queue)s::text, %(fingerprint)s::text, %(payload)s::json, coalesce(%(run_after)s::timestamptz, now()),
        %(deadline)s::timestamptz, %(max_retries)s::integer, %(priority)s::smallint)
RETURNING id, pg_notify(%(channel)s::text, 'q:' || queue) IS NULL;

-- name: reserve_ids
-- Ids for a batch written with COPY, ascending, as one comma-separated text. The sequence is
-- looked up once (MATERIALIZED): an argument of nextval() would be looked up again for every id,
-- which cost most of the statement's time.
WITH q AS MATERIALIZED (SELECT pg_get_serial_sequence('neoq_jobs', 'id')::regclass AS seq)
SELECT string_agg(s.id::text, ',' ORDER BY s.id)
FROM (SELECT nextval(q.seq) AS id FROM q, generate_series(1, %(n)s::integer)) s;

-- name: notify_queues
SELECT pg_notify(%(channel)s::text, 'q:' || q) IS NULL FROM unnest(%(queues)s::text[]) AS q;

-- name: find_duplicate
-- The waiting job that holds the fingerprint of one of a batch's jobs, in batch order.
SELECT j.id
FROM unnest(%(queues)s::text[], %(fingerprints)s::text[]) WITH ORDINALITY AS t(queue, fingerprint, ord)
JOIN neoq_jobs j ON j.queue = t.queue AND j.fingerprint = t.fingerprint AND j.status = 'new'
ORDER BY t.ord
LIMIT 1;

-- name: job_view
-- The job as a user sees it (get_job, list_jobs). A waiting job ('new' in the table) reads 'running'
-- while an attempt is in progress: its lease is alive (lease mode: lease_owner set, run_after the
-- lease's end), or its row is locked by a claim whose transaction is in progress (transaction mode:
-- the locker in xmax, migration 0003), which PostgreSQL ends with the session of a process that
-- died. A row never locked (xmax 0: most waiting jobs) costs no function call.
-- attempts: the counted ones, and the one a waiting job's lock holder runs or lost (migration 0003);
-- not for a row under a live lease, whose attempt is counted already.
-- ran_at of a running claim: when its transaction began, from pg_stat_activity (NULL for a reader
-- that may not see the holder's session: another role, without pg_read_all_stats); the counted
-- attempts' ran_at is written by its settle.
SELECT j.id, j.queue, j.fingerprint, j.payload, j.run_after, j.deadline, j.max_retries, j.retries,
       j.error, j.created_at, l.status,
       coalesce(a.attempts, 0) + coalesce(l.locker IN ('in progress', 'aborted'), false)::integer,
       CASE WHEN l.locker = 'in progress'
            THEN (SELECT s.xact_start FROM pg_stat_activity s WHERE s.backend_xid = j.xmax)
            ELSE a.ran_at END,
       j.finished_at, j.result, j.traceback, p.fraction, p.note, j.priority, j.snoozes
FROM neoq_jobs j
CROSS JOIN LATERAL (
    SELECT CASE WHEN j.status <> 'new' THEN j.status
                WHEN j.lease_owner IS NOT NULL AND j.run_after > now() THEN 'running'
                WHEN k.locker = 'in progress' THEN 'running'
                ELSE 'new' END AS status,
           k.locker
    -- A live lease (lease mode) is its attempt, counted when leased: a locker of its row then is the
    -- holder's own settle, renewal or give-back in progress, not a claim, and adds no attempt.
    FROM (SELECT CASE WHEN j.status = 'new' AND j.xmax <> '0'::xid
                           AND (j.lease_owner IS NULL OR j.run_after <= now())
                      THEN neoq_locker_status(j.xmax, j.xmin, pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
                 END AS locker) k
) l
LEFT JOIN neoq_attempts a ON a.job_id = j.id
LEFT JOIN neoq_progress p ON p.job_id = j.id

-- name: get_job
-- include: job_view
WHERE j.id = %(id)s;

-- name: list_jobs
-- Each job as get_job reads it, filtered by that status ('new': waiting jobs only). The filter on
-- the stored status comes first, so the planner knows how selective it is.
-- include: job_view
WHERE (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
  AND (%(status)s::text IS NULL
       OR (j.status = CASE WHEN %(status)s::text = 'running' THEN 'new' ELSE %(status)s::text END
           AND l.status = %(status)s::text))
ORDER BY j.id DESC
LIMIT %(limit)s;

-- name: stats
-- Counts by status as get_job reads it, in one pass: a function call only for waiting rows that
-- were locked (running, or the trace of a lost attempt), none for the others.
SELECT j.queue,
       CASE WHEN j.status <> 'new' THEN j.status
            WHEN j.lease_owner IS NOT NULL AND j.run_after > now() THEN 'running'
            WHEN j.xmax = '0'::xid THEN 'new'
            WHEN neoq_locker_status(j.xmax, j.xmin, pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
                 = 'in progress' THEN 'running'
            ELSE 'new' END AS status,
       count(*)
FROM neoq_jobs j
GROUP BY 1, 2;

-- name: retry_job
-- A finished job becomes due now with fresh counters; its queue is woken on commit.
WITH job AS (
    UPDATE neoq_jobs
    SET status = 'new', run_after = now(), retries = 0, snoozes = 0, error = NULL, finished_at = NULL, result = NULL,
        traceback = NULL
    WHERE id = %(id)s AND status <> 'new'
    RETURNING id, queue
), attempts AS (
    DELETE FROM neoq_attempts a USING job WHERE a.job_id = job.id
), progress AS (
    DELETE FROM neoq_progress p USING job WHERE p.job_id = job.id
), cancels AS (
    DELETE FROM neoq_cancellations c USING job WHERE c.job_id = job.id
)
SELECT job.queue, pg_notify(%(channel)s, 'q:' || job.queue) IS NULL FROM job;

-- name: job_status
SELECT status FROM neoq_jobs WHERE id = %(id)s;

-- name: fingerprint_holder
-- The waiting job that holds the same queue and fingerprint as job %(id)s.
SELECT h.id
FROM neoq_jobs j JOIN neoq_jobs h ON h.queue = j.queue AND h.fingerprint = j.fingerprint AND h.status = 'new'
WHERE j.id = %(id)s AND h.id <> j.id;

-- name: cancel_waiting
-- A waiting job nobody holds becomes CANCELLED at once; a held (running) one is skipped.
UPDATE neoq_jobs
SET status = 'cancelled', finished_at = now()
WHERE id = (SELECT id FROM neoq_jobs WHERE id = %(id)s AND status = 'new' FOR UPDATE SKIP LOCKED)
RETURNING id;

-- name: request_cancel
-- A running job: leave a durable request and tell every client; its holder acts on it.
WITH request AS (
    INSERT INTO neoq_cancellations (job_id) VALUES (%(id)s) ON CONFLICT (job_id) DO NOTHING
)
SELECT pg_notify(%(channel)s, 'c:' || %(id)s::text) IS NULL;

-- name: pending_cancels
SELECT job_id FROM neoq_cancellations WHERE job_id = ANY(%(ids)s::bigint[]);

-- name: record_tick
INSERT INTO neoq_ticks (key, tick) VALUES (%(key)s, %(tick)s) ON CONFLICT (key, tick) DO NOTHING RETURNING key;

-- name: tick_job
UPDATE neoq_ticks SET job_id = %(job_id)s WHERE key = %(key)s AND tick = %(tick)s;

-- name: last_tick
SELECT max(tick) FROM neoq_ticks WHERE key = %(key)s;

-- name: prune
-- One small batch of finished jobs; rows someone holds (retry_job) are skipped, never waited for.
WITH doomed AS (
    SELECT id FROM neoq_jobs
    WHERE status <> 'new' AND (
           (status = 'processed' AND finished_at < %(processed)s::timestamptz)
        OR (status = 'failed' AND finished_at < %(failed)s::timestamptz)
        OR (status = 'cancelled' AND finished_at < %(cancelled)s::timestamptz))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM neoq_jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
), attempts AS (
    DELETE FROM neoq_attempts a USING gone g WHERE a.job_id = g.id
), progress AS (
    DELETE FROM neoq_progress p USING gone g WHERE p.job_id = g.id
), cancels AS (
    DELETE FROM neoq_cancellations c USING gone g WHERE c.job_id = g.id
)
SELECT count(*) FROM gone;

-- name: progress
-- A running job's progress report (transaction mode), autocommit from the pool: the job row is only
-- read (never locked), so the claim's lock does not block it; a job that is no longer waiting or
-- running (settled meanwhile) gets no late report.
INSERT INTO neoq_progress AS p (job_id, fraction, note, updated_at)
SELECT j.id, %(fraction)s::float8, %(note)s::text, clock_timestamp()
FROM neoq_jobs j
WHERE j.id = %(id)s AND j.status = 'new'
ON CONFLICT (job_id) DO UPDATE SET fraction = excluded.fraction, note = excluded.note, updated_at = excluded.updated_at;

-- name: prune_ticks
-- Tick records older than the cutoff, except each schedule's latest (last_tick() reads it).
DELETE FROM neoq_ticks t
WHERE t.tick < %(cutoff)s::timestamptz
  AND t.tick < (SELECT max(m.tick) FROM neoq_ticks m WHERE m.key = t.key);

-- name: pause_queue
-- Pause a queue (once: a second pause keeps the first's time) and tell every client, whose lease
-- mode gives back the jobs it leased ahead for the queue.
WITH paused AS (
    INSERT INTO neoq_queue_pauses (queue) VALUES (%(queue)s) ON CONFLICT (queue) DO NOTHING
)
SELECT pg_notify(%(channel)s, 'p:' || %(queue)s::text) IS NULL;

-- name: claims_under_way
-- Statements that may have read the pauses before the last one committed, still running: claims
-- of either mode (the only statements naming the table, besides this one, which is left out). The
-- query text of another role's session is hidden without pg_read_all_stats: not counted.
SELECT count(*)
FROM pg_stat_activity s
WHERE s.datname = current_database() AND s.pid <> pg_backend_pid() AND s.state = 'active'
  AND s.query_start < statement_timestamp() AND position('neoq_queue_pauses' IN s.query) > 0;

-- name: resume_queue
-- Resume a queue and wake its claim loops in every client.
WITH resumed AS (
    DELETE FROM neoq_queue_pauses WHERE queue = %(queue)s RETURNING queue
)
SELECT pg_notify(%(channel)s, 'q:' || r.queue) IS NULL FROM resumed r;

-- name: paused_queues
SELECT queue FROM neoq_queue_pauses ORDER BY queue;

-- name: open_windows
-- The enqueue of jobs with a unique_for (ids already inserted, in the same transaction): record
-- each as its key's last, unless the key's last enqueue lies within the job's own unique_for.
-- Returns the first job refused (its place among these, the job that holds the key, how long
-- ago that one was enqueued); no row when all got in. A concurrent enqueue of the same key waits
-- for this transaction (ON CONFLICT), then sees its row.
WITH t AS (
    SELECT *
    FROM unnest(%(queues)s::text[], %(fingerprints)s::text[], %(windows)s::float8[], %(ids)s::bigint[])
         WITH ORDINALITY AS t(queue, fingerprint, seconds, id, ord)
), opened AS (
    INSERT INTO neoq_unique_windows AS w (queue, fingerprint, enqueued_at, unique_for, job_id)
    SELECT t.queue, t.fingerprint, now(), t.seconds, t.id FROM t
    ON CONFLICT (queue, fingerprint) DO UPDATE
    SET enqueued_at = excluded.enqueued_at, unique_for = excluded.unique_for, job_id = excluded.job_id
    WHERE w.enqueued_at <= excluded.enqueued_at - make_interval(secs => excluded.unique_for)
    RETURNING w.job_id
)
SELECT t.ord, w.job_id, EXTRACT(EPOCH FROM now() - w.enqueued_at)::float8, t.seconds
FROM t LEFT JOIN neoq_unique_windows w ON w.queue = t.queue AND w.fingerprint = t.fingerprint
WHERE t.id NOT IN (SELECT o.job_id FROM opened o)
ORDER BY t.ord
LIMIT 1;

-- name: prune_windows
-- Unique-for records older than the cutoff (the retention of failed jobs).
DELETE FROM neoq_unique_windows WHERE enqueued_at < %(cutoff)s::timestamptz;

-- name: make_slots
-- The slots of a queue's global limit (claimed_job_limited), 1 to %(global_limit)s; kept when there
-- are more (a process with a lower limit uses only the first ones).
INSERT INTO neoq_slots (queue, slot)
SELECT %(queue)s, n FROM generate_series(1, %(global_limit)s::integer) AS n
ON CONFLICT (queue, slot) DO NOTHING;

-- name: rate_take
-- A start of a rate-limited queue's key: 0 when taken, else the seconds until the window has room.
SELECT neoq_rate_take(%(queue)s, %(key)s, %(count)s, %(per)s);

-- name: put_off
-- A transaction-mode claim held back by its key's rate limit: due again when the key has room.
-- Committed without a settle, so no attempt is counted (the lock's committed locker is no trace).
UPDATE neoq_jobs SET run_after = now() + make_interval(secs => %(delay)s) WHERE id = %(id)s;
