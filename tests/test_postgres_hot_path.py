"""The PostgreSQL hot path: one-job enqueue, COPY batches, prepared statements and their fallbacks."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from pgfixtures import wait_until

import neoq
from neoq import DuplicateJobError, Handler, Job, JobStatus

pytestmark = pytest.mark.postgres

ODD = 'tab\there, new\nline, cr\r, back\\slash, quote" and é'


@pytest.mark.parametrize("prepare_threshold", [5, None])
def test_large_batches_go_through_copy_and_keep_every_field(pg_clean: str, prepare_threshold: int | None) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    deadline = datetime(2100, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    jobs = [
        Job(
            queue="hot-copy" if i % 3 else f"hot-copy {ODD}",
            payload={"i": i, "text": ODD, "n": 1e16},
            run_after=later if i % 2 else None,
            deadline=deadline if i % 5 == 0 else None,
            max_retries=i % 4 if i % 7 else None,
            fingerprint=f"fp {ODD} {i}" if i % 2 else None,
        )
        for i in range(1150)  # more than two of _COPY_CHUNK's chunks, with and without run_after
    ]
    with neoq.new(pg_clean, prepare_threshold=prepare_threshold) as nq:
        ids = nq.enqueue_many(jobs)
        assert [int(i) for i in ids] == sorted(int(i) for i in ids)
        for job, job_id in zip(jobs, ids, strict=True):
            stored = nq.get_job(job_id)
            assert stored is not None
            assert stored.queue == job.queue and stored.payload == job.payload
            assert stored.deadline == job.deadline and stored.max_retries == job.max_retries
            if job.fingerprint is not None:
                assert stored.fingerprint == job.fingerprint
            if job.run_after is None:
                assert stored.run_after is not None and stored.run_after < later
            else:
                assert stored.run_after == later
        # A batch holding one stored job's fingerprint stores nothing.
        again = [Job(queue="hot-copy", payload={"new": i}) for i in range(100)] + [jobs[1]]
        with pytest.raises(DuplicateJobError) as info:
            nq.enqueue_many(again)
        assert info.value.job_id == ids[1]
        assert nq.stats()["hot-copy"]["new"] == sum(job.queue == "hot-copy" for job in jobs)


@pytest.mark.parametrize("prepare_threshold", [5, None])
def test_one_job_enqueues_and_claims_survive_deallocated_statements(
    pg_clean: str, prepare_threshold: int | None
) -> None:
    with neoq.new(pg_clean, prepare_threshold=prepare_threshold, pool_max_size=1) as nq:
        first = nq.enqueue(Job(queue="hot-one", payload={"text": ODD}))
        with pytest.raises(DuplicateJobError) as info:
            nq.enqueue(Job(queue="hot-one", payload={"text": ODD}))
        assert info.value.job_id == first
        backend: Any = nq.backend
        # Someone dropped every prepared statement on the pooled connections: prepared again.
        for pool in (backend._pools.work, backend._pools.aux):
            with pool.connection() as conn:
                conn.execute("DEALLOCATE ALL")
        second = nq.enqueue(Job(queue="hot-one", payload={"text": "second"}))
        seen: list[str] = []
        nq.handler("hot-one")(lambda job: seen.append(job.payload["text"]))
        nq.drain()
        assert seen == [ODD, "second"]
        for job_id in (first, second):
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 1


def test_a_running_attempt_is_seen_by_other_sessions_and_counted_with_its_outcome(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq, neoq.new(pg_clean) as other:
        job_id = nq.enqueue(Job(queue="hot-attempt", payload={}))
        seen: list[tuple[int, int]] = []

        def handler(job: Job) -> None:
            running = other.get_job(job.id or "")
            assert running is not None and running.status is JobStatus.RUNNING
            seen.append((job.attempts, running.attempts))

        nq.handler("hot-attempt")(handler)
        nq.drain()
        assert seen == [(1, 1)]  # another client sees the running attempt
        job = nq.get_job(job_id)
        assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 1
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            row = conn.execute(
                "SELECT a.xmin = j.xmin FROM neoq_attempts a JOIN neoq_jobs j ON j.id = a.job_id WHERE j.id = %s",
                [int(job_id)],
            ).fetchone()
        assert row == (True,)  # the count was written by the settle's transaction: no transaction of its own


def _lose_an_attempt(url: str, job_id: str, *, commit: bool = False) -> None:
    """Lock the job's row as a claim does, then end that session without a settle (or commit)."""
    holder = psycopg.connect(url)
    try:
        holder.execute("SELECT id FROM neoq_jobs WHERE id = %s FOR UPDATE", [int(job_id)])
        if commit:
            holder.commit()
            return
        with psycopg.connect(url, autocommit=True) as admin:
            pid = holder.info.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            deadline = time.monotonic() + 10
            while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() != (0,):
                assert time.monotonic() < deadline, "the terminated session did not go away"
                time.sleep(0.01)
    finally:
        holder.close()


def test_an_attempt_whose_session_ended_without_a_settle_is_counted_by_the_next_claim(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        job_id = nq.enqueue(Job(queue="hot-lost", payload={}, max_retries=5))
        _lose_an_attempt(pg_clean, job_id)
        assert nq.get_job(job_id).attempts == 1  # type: ignore[union-attr]
        seen: list[tuple[int, int]] = []

        def handler(job: Job) -> None:
            with psycopg.connect(pg_clean, autocommit=True) as other:
                row = other.execute(
                    "SELECT attempts FROM neoq_attempts WHERE job_id = %s", [int(job.id or 0)]
                ).fetchone()
            seen.append((job.attempts, row[0] if row else 0))

        nq.handler("hot-lost")(handler)
        nq.drain()
        # The lost attempt was committed before the handler ran (it survives this one dying too).
        assert seen == [(2, 1)]
        job = nq.get_job(job_id)
        assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 2


def test_a_lock_of_a_waiting_job_that_was_committed_is_not_an_attempt(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        job_id = nq.enqueue(Job(queue="hot-locked", payload={}))
        _lose_an_attempt(pg_clean, job_id, commit=True)
        assert nq.get_job(job_id).attempts == 0  # type: ignore[union-attr]
        seen: list[int] = []
        nq.handler("hot-locked")(lambda job: seen.append(job.attempts))
        nq.drain()
        assert seen == [1] and nq.get_job(job_id).attempts == 1  # type: ignore[union-attr]


def test_a_claim_counts_on_from_the_attempts_it_read(pg_clean: str) -> None:
    # Two earlier attempts ended without an outcome (their worker died): this one is the third.
    with neoq.new(pg_clean) as nq:
        job_id = nq.enqueue(Job(queue="hot-third", payload={}, max_retries=5))
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            conn.execute("INSERT INTO neoq_attempts (job_id, attempts, ran_at) VALUES (%s, 2, now())", [int(job_id)])
        seen: list[int] = []
        nq.handler("hot-third")(lambda job: seen.append(job.attempts))
        nq.drain()
        job = nq.get_job(job_id)
        assert seen == [3]
        assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 3


def test_many_jobs_through_one_claim_loop_each_count_one_attempt(pg_clean: str) -> None:
    # Each settle claims the next job in the same round trip, on the same connection.
    with neoq.new(pg_clean, pool_max_size=1) as nq:
        ids = nq.enqueue_many([Job(queue="hot-chain", payload={"i": i}) for i in range(30)])
        seen: list[tuple[str, int, Any]] = []

        def handler(job: Job) -> None:
            context = neoq.job_context()
            assert context is not None
            context.transaction.execute("SELECT 1")
            seen.append((job.id or "", job.attempts, job.ran_at))

        nq.handler("hot-chain", concurrency=1)(handler)
        nq.drain()
        assert sorted(job_id for job_id, _, _ in seen) == sorted(ids)
        assert {attempts for _, attempts, _ in seen} == {1}
        for job_id, _, ran_at in seen:
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 1
            assert job.ran_at == ran_at  # what the handler saw is what was stored


_FAILING_COUNTER = """
CREATE SEQUENCE IF NOT EXISTS hot_counter_failures;
CREATE OR REPLACE FUNCTION hot_fail_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM neoq_jobs WHERE id = NEW.job_id AND queue = 'hot-counter')
       AND nextval('hot_counter_failures') <= %(failures)s THEN
        RAISE EXCEPTION 'the attempt counter fails on purpose';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hot_fail_counter BEFORE INSERT OR UPDATE ON neoq_attempts
    FOR EACH ROW EXECUTE FUNCTION hot_fail_counter();
"""


def test_retries_due_at_once_under_racing_claims_count_every_attempt_once(pg_clean: str) -> None:
    # Each failed attempt is retried at once, so the other nine claim loops race its settle's
    # commit. A claim whose statement began before that commit still gets the job (PostgreSQL
    # locks the version the settle wrote) and must read the count the settle committed with it;
    # a claim that loses the race must not leave a trace that reads as a lost attempt.
    retries = 40
    with neoq.new(pg_clean) as nq:
        jobs = [nq.enqueue(Job(queue="hot-race", payload={"n": n})) for n in range(3)]
        seen: dict[str, list[int]] = {job_id: [] for job_id in jobs}

        def handler(job: Job) -> None:
            seen[job.id or ""].append(job.attempts)
            if job.retries < retries:
                raise RuntimeError("again")

        nq.start("hot-race", Handler(handler, concurrency=10, max_retries=retries, backoff=lambda n: 0.0))
        for job_id in jobs:
            wait_until(
                lambda: nq.get_job(job_id).status not in (JobStatus.NEW, JobStatus.RUNNING),  # noqa: B023
                60,
                f"job {job_id} ends",
            )
        for job_id in jobs:
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.PROCESSED, job
            assert seen[job_id] == list(range(1, retries + 2)) and job.attempts == retries + 1


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_multixact_left_on_a_waiting_job_is_not_read_as_an_attempt(pg_clean: str, end: str) -> None:
    # Two overlapping share locks leave a MultiXact id in the row's xmax, numbered apart from
    # transaction ids: read as one, it would name some unrelated transaction (which may have aborted).
    with neoq.new(pg_clean) as nq:
        job_id = nq.enqueue(Job(queue="hot-multi", payload={}))
        with psycopg.connect(pg_clean) as first, psycopg.connect(pg_clean) as second:
            for conn in (first, second):
                conn.execute("SELECT id FROM neoq_jobs WHERE id = %s FOR SHARE", [int(job_id)])
            for conn in (first, second):
                conn.commit() if end == "commit" else conn.rollback()
            multi = first.execute(
                "SELECT xmax::text::bigint < xmin::text::bigint,"
                " neoq_locker_status(xmax, xmin, pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
                " FROM neoq_jobs WHERE id = %s",
                [int(job_id)],
            ).fetchone()
            first.rollback()
        # A MultiXact id, lower than any recent transaction id here, and not taken for a locker.
        assert multi == (True, None)
        assert nq.get_job(job_id).attempts == 0  # type: ignore[union-attr]
        seen: list[int] = []
        nq.handler("hot-multi")(lambda job: seen.append(job.attempts))
        nq.drain()
        assert seen == [1] and nq.get_job(job_id).attempts == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("failures", [1, 2])
def test_a_failed_attempt_counter_is_never_lost_silently(pg_clean: str, failures: int) -> None:
    # A claim that finds an attempt lost counts it on a second connection: sent before the
    # handler, read before the settle. A counter that failed is written again; if that fails
    # too, the attempt's writes are rolled back and it runs again.
    with psycopg.connect(pg_clean, autocommit=True) as conn:
        conn.execute("DROP SEQUENCE IF EXISTS hot_counter_failures")
        conn.execute(_FAILING_COUNTER.replace("%(failures)s", str(failures)))
        conn.execute("CREATE TABLE IF NOT EXISTS hot_counter_effects (job_id bigint, attempt integer)")
        conn.execute("TRUNCATE hot_counter_effects")
    try:
        with neoq.new(pg_clean) as nq:
            job_id = nq.enqueue(Job(queue="hot-counter", payload={}))
            _lose_an_attempt(pg_clean, job_id)
            runs: list[int] = []

            def handler(job: Job) -> None:
                runs.append(job.attempts)
                context = neoq.job_context()
                assert context is not None
                context.transaction.execute(
                    "INSERT INTO hot_counter_effects VALUES (%s, %s)", [int(job.id or 0), job.attempts]
                )

            nq.handler("hot-counter")(handler)
            nq.drain()
            nq.drain()  # the attempt whose count was lost runs again
            job = nq.get_job(job_id)
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            effects = conn.execute("SELECT job_id FROM hot_counter_effects").fetchall()
        assert job is not None and job.status is JobStatus.PROCESSED
        assert effects == [(int(job_id),)]  # committed once
        if failures == 1:
            assert runs == [2] and job.attempts == 2  # counted again, in time for the settle
        else:
            # The first run was undone and left its own trace, which the second claim counted
            # (the lost attempt before it was not: its counter failed twice).
            assert runs == [2, 2] and job.attempts == 2
    finally:
        with psycopg.connect(pg_clean, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS hot_fail_counter ON neoq_attempts")
            conn.execute("DROP FUNCTION IF EXISTS hot_fail_counter()")
            conn.execute("DROP SEQUENCE IF EXISTS hot_counter_failures")
            conn.execute("DROP TABLE IF EXISTS hot_counter_effects")


def test_a_claim_that_fails_after_a_settle_leaves_the_outcome_committed(pg_clean: str) -> None:
    # The settle and the next claim share one round trip; the handler drops the claim statement
    # of its own connection (claim_plain: no job has a priority), so that claim fails after the
    # COMMIT: the outcome stays stored.
    with neoq.new(pg_clean, pool_max_size=1) as nq:
        ids = nq.enqueue_many([Job(queue="hot-failclaim", payload={"i": i}) for i in range(3)])
        seen: list[int] = []

        def handler(job: Job) -> None:
            context = neoq.job_context()
            assert context is not None
            if not seen:
                context.transaction.execute("DEALLOCATE neoq_claim_plain")
            seen.append(job.payload["i"])

        nq.handler("hot-failclaim", concurrency=1)(handler)
        nq.drain()
        assert sorted(seen) == [0, 1, 2]
        with nq.backend._pools.work.connection() as conn:  # type: ignore[attr-defined]
            names = {row[0] for row in conn.execute("SELECT name FROM pg_prepared_statements")}
        assert "neoq_claim_plain" in names  # prepared again
        for job_id in ids:
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.PROCESSED and job.attempts == 1


def test_the_chained_claim_takes_a_job_of_higher_priority_enqueued_while_one_ran(pg_clean: str) -> None:
    # The chained claim tries the single range of priority-0 jobs first (claim_plain); a job above
    # priority 0 that came due while the first job ran is taken next, and jobs below 0 after every 0.
    with neoq.new(pg_clean, pool_max_size=1) as nq:
        nq.enqueue_many([Job(queue="hot-prio", payload={"i": i}) for i in range(3)])
        nq.enqueue(Job(queue="hot-prio", payload={"i": "low"}, priority=-1))
        seen: list[Any] = []

        def handler(job: Job) -> None:
            if not seen:
                nq.enqueue(Job(queue="hot-prio", payload={"i": "high"}, priority=5))
            seen.append(job.payload["i"])

        nq.handler("hot-prio", concurrency=1)(handler)
        nq.drain()
        assert seen == [0, "high", 1, 2, "low"]
