-- Named queries of the PostgreSQL lease mode, loaded once by neoq.backends.postgres.leasestore.
--
-- A lease is (run_after = expiry, lease_token = fencing token, lease_owner) on a job that stays
-- 'new' (see migrations/0002_lease.sql). Every write of a holder names its token, so a holder
-- whose lease expired and was claimed again changes nothing. Every value is a bound parameter,
-- except lease_claim's %(limit)s: leasestore.py writes that integer into the text (see _CLAIM_BY_LIMIT).

-- name: lease_ranges
-- The due jobs of a queue in claim order, as CTEs after a WITH (see lease_claim).
high AS (
    SELECT j.id, j.run_after
    FROM neoq_jobs j
    WHERE j.queue = %(queue)s AND j.status = 'new' AND j.priority > 0 AND j.run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses q WHERE q.queue = %(queue)s)
      -- Evaluated once, before the first row of the first range (always read): this statement's
      -- own transaction commits without waiting for its WAL to reach the disk (SET LOCAL in one
      -- statement, PgBouncer-safe).
      AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), plain AS (
    SELECT j.id, j.run_after
    FROM neoq_jobs j
    WHERE j.queue = %(queue)s AND j.status = 'new' AND j.priority = 0 AND j.run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses q WHERE q.queue = %(queue)s)
    ORDER BY j.run_after, j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), low AS (
    SELECT j.id, j.run_after
    FROM neoq_jobs j
    WHERE j.queue = %(queue)s AND j.status = 'new' AND j.priority < 0 AND j.run_after <= now()
      AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses q WHERE q.queue = %(queue)s)
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: lease_rest
-- The lease of the jobs ``picked`` and its answer (see lease_claim); ``holding`` says whether a
-- limit held jobs back when none was leased.
leased AS (
    UPDATE neoq_jobs j
    SET run_after = now() + make_interval(secs => %(lease)s),
        lease_token = j.lease_token + 1,
        lease_owner = %(owner)s
    FROM picked p
    WHERE j.id = p.id
    RETURNING j.id, j.queue, j.fingerprint, j.payload, p.run_after AS due_at, j.deadline, j.max_retries,
              j.retries, j.error, j.created_at, j.lease_token, j.priority, j.snoozes
), counted AS (
    INSERT INTO neoq_attempts AS a (job_id, attempts, ran_at)
    SELECT l.id, 1, clock_timestamp() FROM leased l
    ON CONFLICT (job_id) DO UPDATE SET attempts = a.attempts + 1, ran_at = excluded.ran_at
    RETURNING a.job_id, a.attempts, a.ran_at
)
SELECT l.id, l.queue, l.fingerprint, l.payload, l.due_at, l.deadline, l.max_retries, l.retries, l.error,
       l.created_at, l.lease_token, c.attempts, c.ran_at,
       EXISTS (SELECT 1 FROM neoq_cancellations x WHERE x.job_id = l.id) AS cancel_requested,
       NULL::float8 AS next_due, l.priority, l.snoozes, false AS held
FROM leased l JOIN counted c ON c.job_id = l.id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT EXTRACT(EPOCH FROM min(n.run_after) - clock_timestamp())::float8
        FROM neoq_jobs n
        WHERE n.queue = %(queue)s AND n.status = 'new' AND n.run_after > now()
          -- A paused queue: nothing scheduled, its loops wait for the resume's notification.
          AND NOT EXISTS (SELECT 1 FROM neoq_queue_pauses q WHERE q.queue = %(queue)s)),
       NULL, NULL, (SELECT h.held FROM holding h)
WHERE NOT EXISTS (SELECT 1 FROM leased);

-- name: lease_claim
-- Lease up to %(limit)s due jobs of a queue in one statement and count their attempts; or, when
-- none is due, say when the next one comes due (seconds, by the database's clock). Rows a
-- transaction-mode claim holds are locked and skipped. %(limit)s is replaced by a literal integer
-- before the statement is sent, so that its prepared (generic) plan knows how many rows it takes.
-- Losing a lease in a server crash loses nothing (the job is due again), so the statement commits
-- asynchronously; the outcome that follows is written durably.
-- The claim order is (priority DESC, run_after, id), read as three ranges, each from its index and
-- only as far as the ranges before it left room (queries.sql: claimed_job; migration 0006). A
-- paused queue's jobs are not taken.
WITH holding AS (
    SELECT false AS held
),
-- include: lease_ranges
, picked AS (
    SELECT * FROM high UNION ALL SELECT * FROM plain UNION ALL SELECT * FROM low LIMIT %(limit)s
),
-- include: lease_rest

-- name: lease_claim_limited
-- lease_claim for a queue with a global limit (Handler.global_limit): no more leases than the
-- limit leaves room for, counting the live leases of the queue (a dead process's end with their
-- lease) but for %(done)s, this process's jobs whose outcomes are on their way. Limited fetches of a queue take turns on an advisory lock held to their commit, and
-- count after they got it (neoq_leased_count takes a snapshot of its own: the statement's is
-- older than the lock), so two fetches never fill the same room. With no room: held.
WITH gate AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(hashtextextended('neoq_slots:' || %(queue)s, 0)) IS NULL AS locked
), room AS MATERIALIZED (
    SELECT greatest(0, %(global_limit)s::integer - neoq_leased_count(%(queue)s, %(done)s::bigint[])) AS n FROM gate
), holding AS (
    SELECT (SELECT n FROM room) = 0 AS held
),
-- include: lease_ranges
, picked AS (
    SELECT *
    FROM (SELECT * FROM high UNION ALL SELECT * FROM plain UNION ALL SELECT * FROM low) r
    LIMIT least(%(limit)s, (SELECT n FROM room))
),
-- include: lease_rest

-- name: lease_settle
-- Write the outcomes of many attempts in one statement, each fenced by its token. Returns the
-- rows written; a missing id is a lease that was lost (expired and claimed again, or cancelled).
-- A retry or a put-back wakes its queue's workers on commit. The arrays come as literals
-- ('{1,2}'); each run_after in microseconds since 1970, added as whole seconds plus
-- microseconds (exact, where one float product would not be).
WITH t AS (
    SELECT u.id, u.token, u.status, u.error,
           timestamptz 'epoch' + u.micros / 1000000 * interval '1 second'
               + mod(u.micros, 1000000) * interval '1 microsecond' AS run_after,
           u.retries, u.result::json AS result, u.traceback, u.snoozed
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(statuses)s::text[], %(errors)s::text[],
                %(run_afters)s::bigint[], %(retries)s::integer[], %(results)s::text[], %(tracebacks)s::text[],
                %(snoozed)s::integer[])
         AS u(id, token, status, error, micros, retries, result, traceback, snoozed)
), done AS (
    UPDATE neoq_jobs j
    SET status = t.status,
        error = t.error,
        -- As the transaction mode's settle: no traceback with the error unchanged keeps the stored one.
        traceback = CASE WHEN t.traceback IS NULL AND t.error IS NOT DISTINCT FROM j.error
                         THEN j.traceback ELSE t.traceback END,
        result = t.result,
        run_after = t.run_after,
        retries = coalesce(t.retries, j.retries),
        snoozes = j.snoozes + t.snoozed,
        finished_at = CASE WHEN t.status = 'new' THEN NULL ELSE now() END,
        lease_owner = NULL
    FROM t
    WHERE j.id = t.id AND j.lease_token = t.token AND j.status = 'new'
    RETURNING j.id, j.status, j.queue
), requests AS (
    DELETE FROM neoq_cancellations c USING done d WHERE c.job_id = d.id
)
SELECT d.id, CASE WHEN d.status = 'new' THEN pg_notify(%(channel)s, 'q:' || d.queue) IS NULL END
FROM done d;

-- name: lease_heartbeat
-- Renew the leases that are past a third of their time, in one statement, and report the ones
-- this holder lost (with the job's status then: 'cancelled' means cancel_job reached it). Rows a
-- concurrent settle holds are skipped, not waited for: they are renewed next time, if still ours.
-- The ids and tokens come as two array literals ('{1,2}').
WITH t AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS t(id, token)
), mine AS (
    SELECT j.id
    FROM neoq_jobs j JOIN t ON j.id = t.id AND j.lease_token = t.token
    -- lease_owner: a lease given back, or a retry written, since the holder's list was read keeps
    -- its token but is no one's: renewing it would put the job off by a whole lease.
    WHERE j.status = 'new' AND j.lease_owner IS NOT NULL
      AND j.run_after < now() + make_interval(secs => %(renew_below)s)
    FOR UPDATE OF j SKIP LOCKED
), renewed AS (
    UPDATE neoq_jobs j SET run_after = now() + make_interval(secs => %(lease)s)
    FROM mine m WHERE j.id = m.id
    RETURNING j.id
)
SELECT t.id, j.status
FROM t LEFT JOIN neoq_jobs j ON j.id = t.id
WHERE j.id IS NULL OR j.lease_token <> t.token OR j.status <> 'new';

-- name: lease_return
-- Put leased jobs that never started back as they were (due at their old time, the attempt
-- uncounted), and wake their queues.
WITH t AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(due_ats)s::timestamptz[]) AS t(id, token, due_at)
), back AS (
    UPDATE neoq_jobs j SET run_after = t.due_at, lease_owner = NULL
    FROM t
    WHERE j.id = t.id AND j.lease_token = t.token AND j.status = 'new'
    RETURNING j.id, j.queue
), uncounted AS (
    UPDATE neoq_attempts a SET attempts = a.attempts - 1 FROM back b WHERE a.job_id = b.id AND a.attempts > 0
)
SELECT b.id, pg_notify(%(channel)s, 'q:' || b.queue) IS NULL FROM back b;

-- name: lease_progress
-- A running job's progress report, fenced by the lease's token: a holder whose lease was lost (the
-- job claimed again, settled or cancelled) writes nothing.
INSERT INTO neoq_progress AS p (job_id, fraction, note, updated_at)
SELECT j.id, %(fraction)s::float8, %(note)s::text, clock_timestamp()
FROM neoq_jobs j
WHERE j.id = %(id)s AND j.lease_token = %(token)s AND j.status = 'new'
ON CONFLICT (job_id) DO UPDATE SET fraction = excluded.fraction, note = excluded.note, updated_at = excluded.updated_at;

-- name: lease_put_off
-- lease_return for leased jobs held back by a rate limit, without the wake-up: the window is full,
-- and waking the queue's loops would only have them lease and put back again. Due at %(due_ats)s.
WITH t AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(due_ats)s::timestamptz[]) AS t(id, token, due_at)
), back AS (
    UPDATE neoq_jobs j SET run_after = t.due_at, lease_owner = NULL
    FROM t
    WHERE j.id = t.id AND j.lease_token = t.token AND j.status = 'new'
    RETURNING j.id
)
UPDATE neoq_attempts a SET attempts = a.attempts - 1 FROM back b WHERE a.job_id = b.id AND a.attempts > 0;
