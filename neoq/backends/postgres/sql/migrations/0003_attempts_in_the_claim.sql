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
-- neoq_locker_status(xmax, reference) says which: 'in progress', 'committed', 'aborted', or NULL
-- (no locker, or one too old for the commit log). xmax is a 32-bit transaction id; reference is
-- a 64-bit one at least as new as it (the claim's own, or the snapshot's xmax), from which the
-- id's epoch is taken. An id at or past the reference is reported 'in progress' without a
-- lookup (pg_xact_status refuses ids from the future).
--
-- PL/pgSQL rather than SQL: a SQL function with a FROM clause is not inlined, and its body was
-- planned again on every call, which cost a claim as much as the rest of it.
CREATE FUNCTION neoq_locker_status(locker xid, reference bigint) RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
DECLARE
    full_id bigint;
BEGIN
    IF locker::text = '0' THEN
        RETURN NULL;
    END IF;
    full_id := reference
               + ((locker::text::bigint - reference % 4294967296) % 4294967296 + 6442450944) % 4294967296
               - 2147483648;
    IF full_id >= reference THEN
        RETURN 'in progress';
    END IF;
    RETURN pg_xact_status(full_id::text::xid8);
END
$$;
