"""Part of ``BackendSuite``: managing and inspecting.

Cancel, retry, stats, list_jobs, and what a user sees: RUNNING and finished_at.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from ..app import Neoq
from ..backends.base import Backend, Outcome
from ..context import job_context
from ..errors import DuplicateJobError, JobNotFoundError
from ..handler import Handler
from ..job import Job, JobStatus, prepare_job
from .base import SuiteBase
from .helpers import PATIENCE, utc_now, wait_for


class ManagingTests(SuiteBase):
    """Managing and inspecting jobs: cancel, retry, stats, list_jobs, and what a user sees (RUNNING, finished_at)."""

    # -- managing ------------------------------------------------------------------------

    def test_cancel_waiting_job(self, nq: Neoq) -> None:
        job_id = nq.enqueue(Job(queue="cancel", payload={}, run_after=utc_now() + timedelta(milliseconds=200)))
        ran: list[int] = []
        nq.start("cancel", lambda job: ran.append(1))
        nq.cancel_job(job_id)
        assert self.status_of(nq, job_id) is JobStatus.CANCELLED
        other = nq.enqueue(Job(queue="cancel", payload={"other": 1}, run_after=utc_now() + timedelta(milliseconds=300)))
        self.wait_status(nq, other, JobStatus.PROCESSED)
        assert ran == [1]

    def test_cancel_running_job(self, nq: Neoq) -> None:
        entered = threading.Event()
        saw_cancel: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            entered.set()
            saw_cancel.append(context.cancelled.wait(PATIENCE))

        nq.start("cancel_running", handler)
        job_id = nq.enqueue(Job(queue="cancel_running", payload={}))
        assert entered.wait(PATIENCE)
        assert self.status_of(nq, job_id) is JobStatus.RUNNING
        nq.cancel_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.CANCELLED)
        assert job.finished_at is not None and job.ran_at is not None and job.finished_at >= job.ran_at
        wait_for(lambda: saw_cancel)
        assert saw_cancel == [True]

    def test_cancel_finished_job_changes_nothing(self, nq: Neoq) -> None:
        nq.start("finished", lambda job: None)
        job_id = nq.enqueue(Job(queue="finished", payload={}))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        nq.cancel_job(job_id)
        assert self.status_of(nq, job_id) is JobStatus.PROCESSED

    def test_unknown_ids_raise_not_found(self, nq: Neoq) -> None:
        with pytest.raises(JobNotFoundError):
            nq.cancel_job("987654321")
        with pytest.raises(JobNotFoundError):
            nq.retry_job("987654321")
        with pytest.raises(JobNotFoundError):
            nq.retry_job("not-an-id")

    def test_retry_job(self, nq: Neoq) -> None:
        fail = [True]

        def handler(job: Job) -> None:
            if fail[0]:
                raise ValueError("fails until fixed")

        waiting = nq.enqueue(Job(queue="retry", payload={"n": 0}, run_after=utc_now() + timedelta(hours=1)))
        nq.retry_job(waiting)  # NEW: left as it is
        job = nq.get_job(waiting)
        assert job is not None and job.status is JobStatus.NEW and job.run_after is not None
        assert job.run_after > utc_now() + timedelta(minutes=50)

        nq.start("retry", Handler(handler, max_retries=0))
        job_id = nq.enqueue(Job(queue="retry", payload={"n": 1}))
        self.wait_status(nq, job_id, JobStatus.FAILED)
        blocker = nq.enqueue(Job(queue="retry", payload={"n": 1}, run_after=utc_now() + timedelta(hours=1)))
        with pytest.raises(DuplicateJobError):
            nq.retry_job(job_id)
        nq.cancel_job(blocker)
        fail[0] = False
        nq.retry_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.retries == 0 and job.error is None
        nq.retry_job(blocker)  # a CANCELLED job runs again too
        self.wait_status(nq, blocker, JobStatus.PROCESSED)

    def test_stats_and_list_jobs(self, nq: Neoq) -> None:
        assert nq.stats() == {}
        later = utc_now() + timedelta(hours=1)
        first = nq.enqueue(Job(queue="s1", payload={"n": 1}, run_after=later))
        second = nq.enqueue(Job(queue="s1", payload={"n": 2}, run_after=later))
        third = nq.enqueue(Job(queue="s2", payload={"n": 3}, run_after=later))
        nq.cancel_job(second)
        assert nq.stats() == {
            "s1": {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 1},
            "s2": {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 0},
        }
        assert [job.id for job in nq.list_jobs()] == [third, second, first]
        assert [job.id for job in nq.list_jobs(queue="s1")] == [second, first]
        assert [job.id for job in nq.list_jobs(status=JobStatus.CANCELLED)] == [second]
        assert [job.id for job in nq.list_jobs(status="new", limit=1)] == [third]
        assert nq.list_jobs(queue="nothing") == []

    # -- the state a user sees: RUNNING and finished_at ------------------------------------

    def test_running_job_reads_running_everywhere(self, nq: Neoq) -> None:
        entered, release = threading.Event(), threading.Event()
        seen: list[JobStatus] = []

        def handler(job: Job) -> None:
            seen.append(job.status)
            entered.set()
            release.wait(PATIENCE)

        nq.start("shown", handler)
        waiting = nq.enqueue(Job(queue="shown", payload={"n": 0}, run_after=utc_now() + timedelta(hours=1)))
        job_id = nq.enqueue(Job(queue="shown", payload={"n": 1}))
        try:
            assert entered.wait(PATIENCE)
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.RUNNING
            assert job.attempts == 1 and job.ran_at is not None and job.finished_at is None
            assert seen == [JobStatus.RUNNING]  # the handler's own view
            assert [j.id for j in nq.list_jobs(status=JobStatus.RUNNING)] == [job_id]
            assert [j.id for j in nq.list_jobs(queue="shown", status="running")] == [job_id]
            assert [j.id for j in nq.list_jobs(status=JobStatus.NEW)] == [waiting]
            assert [j.status for j in nq.list_jobs(queue="shown")] == [JobStatus.RUNNING, JobStatus.NEW]
            assert nq.stats() == {"shown": {"new": 1, "running": 1, "processed": 0, "failed": 0, "cancelled": 0}}
            # Uniqueness treats a running job as a waiting one.
            with pytest.raises(DuplicateJobError) as info:
                nq.enqueue(Job(queue="shown", payload={"n": 1}))
            assert info.value.job_id == job_id
            nq.retry_job(job_id)  # left as it is
            again = nq.get_job(job_id)
            assert again is not None and again.status is JobStatus.RUNNING and again.attempts == 1
        finally:
            release.set()
        done = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert done.finished_at is not None
        assert nq.list_jobs(status=JobStatus.RUNNING) == []
        assert nq.stats() == {"shown": {"new": 1, "running": 0, "processed": 1, "failed": 0, "cancelled": 0}}

    def test_finished_at_is_the_end_of_the_attempt(self, nq: Neoq) -> None:
        entered, release = threading.Event(), threading.Event()

        def handler(job: Job) -> None:
            entered.set()
            release.wait(PATIENCE)
            time.sleep(0.3)  # the attempt's work: finished_at comes after it, not at the start
            if job.payload["fail"]:
                raise ValueError("failed after its work")

        nq.start("ends", Handler(handler, max_retries=0, concurrency=2))
        ids = [nq.enqueue(Job(queue="ends", payload={"fail": fail})) for fail in (False, True)]
        assert entered.wait(PATIENCE)
        for job_id in ids:
            job = nq.get_job(job_id)
            assert job is not None and job.finished_at is None  # waiting or running
        release.set()
        for job_id, status in zip(ids, (JobStatus.PROCESSED, JobStatus.FAILED), strict=True):
            job = self.wait_status(nq, job_id, status)
            assert job.ran_at is not None and job.finished_at is not None
            assert job.finished_at.tzinfo is not None and job.finished_at.utcoffset() == timedelta(0)
            assert job.finished_at - job.ran_at >= timedelta(seconds=0.25), (job.ran_at, job.finished_at)
            assert job.finished_at <= utc_now() + timedelta(seconds=1)
        # A cancelled job finished when it was cancelled; retry_job clears it.
        later = nq.enqueue(Job(queue="ends_later", payload={}, run_after=utc_now() + timedelta(hours=1)))
        before = utc_now()
        nq.cancel_job(later)
        job = nq.get_job(later)
        assert job is not None and job.status is JobStatus.CANCELLED and job.finished_at is not None
        assert abs((job.finished_at - before).total_seconds()) < 1
        nq.retry_job(later)
        job = nq.get_job(later)
        assert job is not None and job.status is JobStatus.NEW and job.finished_at is None

    def test_prune_goes_by_the_end_of_the_attempt(self, backend: Backend) -> None:
        backend.open()
        try:
            (job_id,) = backend.enqueue([prepare_job(Job(queue="prune_end", payload={}))[0]])
            claim = backend.claim("prune_end", 1)
            assert claim is not None and claim.job.ran_at is not None
            time.sleep(0.3)  # the attempt's work
            backend.settle(claim, Outcome(JobStatus.PROCESSED))
            backend.release(claim)
            # Finished 0.3 s after it started: not before a cutoff 0.15 s after the start.
            assert backend.prune({JobStatus.PROCESSED: claim.job.ran_at + timedelta(seconds=0.15)}, 100) == 0
            stored = backend.get_job(job_id)
            assert stored is not None and stored.finished_at is not None
            assert stored.finished_at - claim.job.ran_at >= timedelta(seconds=0.25)
        finally:
            backend.close()
