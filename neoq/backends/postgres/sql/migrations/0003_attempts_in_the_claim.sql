-- neoq schema, version 3: attempts are counted by the settle, inside the claim's transaction.
--
-- A claim locks its job's row (SELECT ... FOR UPDATE), which writes the claiming transaction's id
-- into the row's xmax. A settle replaces the row by a new version whose xmax is 0, in the same
-- transaction that adds the attempt to neoq_attempts. So a waiting job whose xmax still names a
-- transaction had an attempt that is running (that transaction is in progress) or that ended
-- without a settle (it aborted: its worker died, or its session was ended): an attempt that
-- neoq_attempts does not hold yet. The next claim sees it and counts it at once, in a
-- transaction of its own, before its handler runs (backend._take).
--
-- neoq_locker_status(xmax, xmin, reference) says which: 'in progress', 'committed', 'aborted', or
-- NULL (no locker, one too old for the commit log, or not a locker of this row version). xmax and
-- xmin are 32-bit transaction ids; reference is a 64-bit one at least as new as xmax (the claim's
-- own, or the snapshot's xmax), from which their epoch is taken. An id at or past the reference is
-- reported 'in progress' without a lookup (pg_xact_status refuses ids from the future).
--
-- A claim's lock is the first write of its transaction, so its id is newer than the row
-- version's creator (xmin). An xmax that is not is either the settling transaction's own lock,
-- carried over to the version it wrote (committed), or a MultiXact id, which is numbered apart
-- from transaction ids and which SQL cannot tell from one: reading it as a transaction id would
-- report the status of some unrelated transaction. Both are reported NULL.
--
-- PL/pgSQL rather than SQL: a SQL function with a FROM clause is not inlined, and its body was
-- planned again on every call, which cost a claim as much as the rest of it.
CREATE FUNCTION neoq_locker_status(locker xid, creator xid, reference bigint) RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
DECLARE
    locker_id bigint;
    creator_id bigint;
BEGIN
    IF locker::text = '0' THEN
        RETURN NULL;
    END IF;
    locker_id := reference
                 + ((locker::text::bigint - reference % 4294967296) % 4294967296 + 6442450944) % 4294967296
                 - 2147483648;
    creator_id := reference
                  + ((creator::text::bigint - reference % 4294967296) % 4294967296 + 6442450944) % 4294967296
                  - 2147483648;
    IF locker_id <= creator_id THEN
        RETURN NULL;
    END IF;
    IF locker_id >= reference THEN
        RETURN 'in progress';
    END IF;
    RETURN pg_xact_status(locker_id::text::xid8);
END
$$;

-- The attempts counted so far of a job a claim just locked. A claim that found the job while its
-- previous attempt's settle was committing locks the version that settle wrote (PostgreSQL
-- follows the update), but its own statement's snapshot predates that commit, so a plain subquery
-- would read the count from before it: one attempt short. A VOLATILE function's queries take a
-- fresh snapshot, taken here after the lock, so they see what the settle committed.
CREATE FUNCTION neoq_attempts_of(job bigint) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
BEGIN
    RETURN coalesce((SELECT a.attempts FROM neoq_attempts a WHERE a.job_id = job), 0);
END
$$;
