"""The PostgreSQL hot path: one-job enqueue, COPY batches, prepared statements and their fallbacks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import neoq
from neoq import DuplicateJobError, Job, JobStatus

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
        for i in range(150)
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
        assert nq.stats()["hot-copy"]["new"] == 100


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


def test_a_running_job_sees_its_counted_attempt(pg_clean: str) -> None:
    with neoq.new(pg_clean) as nq:
        job_id = nq.enqueue(Job(queue="hot-attempt", payload={}))
        counted: list[tuple[int, int]] = []

        def handler(job: Job) -> None:
            with psycopg.connect(pg_clean, autocommit=True) as other:
                row = other.execute(
                    "SELECT attempts FROM neoq_attempts WHERE job_id = %s", [int(job.id or 0)]
                ).fetchone()
            counted.append((job.attempts, row[0] if row else 0))

        nq.handler("hot-attempt")(handler)
        nq.drain()
        assert counted == [(1, 1)]  # committed, visible to another session, before the handler ran
        assert nq.get_job(job_id).status is JobStatus.PROCESSED  # type: ignore[union-attr]
