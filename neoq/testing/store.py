"""Part of ``BackendSuite``: the store level.

The backend's primitives (claim, settle, wake-ups, cron ticks, prune) driven directly, and the
client's shutdown.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from ..app import new
from ..backends.base import Backend, Outcome
from ..context import job_context
from ..job import Job, JobStatus, prepare_job
from .base import SuiteBase
from .helpers import PATIENCE, neoq_threads, utc_now


class StoreTests(SuiteBase):
    """The backend's own primitives (claim, settle, wake-ups, cron ticks, prune) and shutdown."""

    # -- the backend's own primitives ----------------------------------------------------

    def test_claim_settle_and_wakeup(self, backend: Backend) -> None:
        backend.open()
        try:
            assert backend.claim("prims", 0) is None
            start = time.monotonic()
            assert backend.claim("prims", 0.1) is None
            assert time.monotonic() - start >= 0.09
            got: list[Any] = []
            waiter = threading.Thread(target=lambda: got.append(backend.claim("prims", PATIENCE)))
            waiter.start()
            time.sleep(0.05)  # let the waiter block; the wake-up must also work if it is late
            backend.wakeup("prims", 1)
            waiter.join(PATIENCE / 2)
            assert not waiter.is_alive() and got == [None]

            job, _ = prepare_job(Job(queue="prims", payload={"p": 1}))
            (job_id,) = backend.enqueue([job])
            claim = backend.claim("prims", 1)
            assert claim is not None and claim.job.id == job_id and claim.job.attempts == 1
            assert claim.job.payload == {"p": 1} and claim.job.ran_at is not None
            assert backend.claim("prims", 0) is None  # held by the claim
            backend.settle(claim, Outcome(JobStatus.NEW, "ValueError: x", utc_now(), 1))
            backend.release(claim)
            again = backend.claim("prims", 1)
            assert again is not None and again.job.attempts == 2 and again.job.retries == 1
            assert again.job.error == "ValueError: x"
            backend.settle(again, Outcome(JobStatus.PROCESSED))
            backend.release(again)
            stored = backend.get_job(job_id)
            assert stored is not None and stored.status is JobStatus.PROCESSED and stored.error is None
        finally:
            backend.close()

    def test_a_second_settle_of_a_claim_changes_nothing(self, backend: Backend) -> None:
        """The runtime settles a claim again (as NEW, due now) when a settle failed unexpectedly:
        that must not undo an outcome stored before, nor touch a later claim of the same job."""
        backend.open()
        try:
            (done_id,) = backend.enqueue([prepare_job(Job(queue="twice", payload={"n": 1}))[0]])
            claim = backend.claim("twice", 1)
            assert claim is not None
            backend.settle(claim, Outcome(JobStatus.PROCESSED))
            backend.settle(claim, Outcome(JobStatus.NEW, None, utc_now(), 0))
            backend.release(claim)
            done = backend.get_job(done_id)
            assert done is not None and done.status is JobStatus.PROCESSED

            (retried_id,) = backend.enqueue([prepare_job(Job(queue="twice", payload={"n": 2}))[0]])
            first = backend.claim("twice", 1)
            assert first is not None and first.job.id == retried_id
            backend.settle(first, Outcome(JobStatus.NEW, "ValueError: x", utc_now(), 1))
            backend.release(first)
            second = backend.claim("twice", 1)
            assert second is not None and second.job.id == retried_id and second.job.attempts == 2
            backend.settle(first, Outcome(JobStatus.NEW, None, utc_now(), 0))  # stale: changes nothing
            assert backend.claim("twice", 0) is None  # still held by the second claim
            backend.settle(second, Outcome(JobStatus.PROCESSED))
            backend.release(second)
            job = backend.get_job(retried_id)
            assert job is not None and job.status is JobStatus.PROCESSED and job.retries == 1
        finally:
            backend.close()

    def test_claim_order_is_run_after_then_id(self, backend: Backend) -> None:
        backend.open()
        try:
            now = utc_now()
            jobs = [
                prepare_job(Job(queue="order", payload={"n": n}, run_after=now - timedelta(seconds=s)))[0]
                for n, s in ((0, 1), (1, 3), (2, 2))
            ]
            backend.enqueue(jobs)
            order = []
            for _ in range(3):
                claim = backend.claim("order", 1)
                assert claim is not None
                order.append(claim.job.payload["n"])
                backend.settle(claim, Outcome(JobStatus.PROCESSED))
                backend.release(claim)
            assert order == [1, 2, 0]
        finally:
            backend.close()

    def test_enqueue_tick_once_per_tick(self, backend: Backend) -> None:
        backend.open()
        try:
            tick = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
            assert backend.last_tick("cron:q") is None

            def make(t: datetime) -> Job:
                return prepare_job(Job(queue="cron:q", payload={"scheduled_at": t.isoformat()}))[0]

            first = backend.enqueue_tick(make(tick), "cron:q", tick)
            assert first is not None
            assert backend.enqueue_tick(make(tick), "cron:q", tick) is None
            later = tick + timedelta(minutes=1)
            assert backend.enqueue_tick(make(later), "cron:q", later) is not None
            assert backend.last_tick("cron:q") == later
            claim = backend.claim("cron:q", 1)
            assert claim is not None
            backend.settle(claim, Outcome(JobStatus.PROCESSED))
            backend.release(claim)
            assert backend.enqueue_tick(make(tick), "cron:q", tick) is None  # even once processed
        finally:
            backend.close()

    def test_prune_deletes_only_old_finished_jobs(self, backend: Backend) -> None:
        backend.open()
        try:
            ids = backend.enqueue([prepare_job(Job(queue="prune", payload={"n": n}))[0] for n in range(4)])
            for status in (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED):
                claim = backend.claim("prune", 1)
                assert claim is not None
                backend.settle(claim, Outcome(status, None if status is JobStatus.PROCESSED else "E: x"))
                backend.release(claim)
            future = utc_now() + timedelta(seconds=5)
            assert backend.prune({JobStatus.PROCESSED: utc_now() - timedelta(hours=1)}, 100) == 0
            assert backend.prune({JobStatus.PROCESSED: future, JobStatus.CANCELLED: future}, 100) == 2
            remaining = {job.status for job in backend.list_jobs(None, None, 10)}
            assert remaining == {JobStatus.FAILED, JobStatus.NEW}
            assert backend.prune({JobStatus.FAILED: future}, 100) == 1
            assert [job.id for job in backend.list_jobs(None, None, 10)] == [ids[3]]
        finally:
            backend.close()

    def test_prune_keeps_recent_tick_records(self, backend: Backend) -> None:
        backend.open()
        try:
            now = utc_now()
            recent, latest = now - timedelta(hours=1), now - timedelta(minutes=1)
            for tick in (recent, latest):
                job = prepare_job(Job(queue="cron:keep", payload={"scheduled_at": tick.isoformat()}))[0]
                assert backend.enqueue_tick(job, "cron:keep", tick) is not None
            # A job retention of seconds must not let a tick of the last day be stored twice.
            backend.prune(dict.fromkeys((JobStatus.PROCESSED, JobStatus.FAILED), now), 100)
            again = prepare_job(Job(queue="cron:keep", payload={"scheduled_at": recent.isoformat(), "x": 1}))[0]
            assert backend.enqueue_tick(again, "cron:keep", recent) is None
            assert backend.last_tick("cron:keep") == latest
        finally:
            backend.close()

    # -- shutdown ------------------------------------------------------------------------

    def test_shutdown_leaves_no_thread_and_is_idempotent(self, backend: Backend) -> None:
        nq = new(backend=backend)
        nq.start("bye", lambda job: None, concurrency=3)
        nq.enqueue(Job(queue="bye", payload={}, run_after=utc_now() + timedelta(hours=1)))
        job_id = nq.enqueue(Job(queue="bye", payload={"now": 1}))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        nq.shutdown()
        assert neoq_threads() == []
        nq.shutdown()

    def test_shutdown_waits_for_running_attempts(self, backend: Backend) -> None:
        entered = threading.Event()

        def handler(job: Job) -> None:
            entered.set()
            time.sleep(0.3)

        nq = new(backend=backend)
        nq.start("grace", handler)
        job_id = nq.enqueue(Job(queue="grace", payload={}))
        assert entered.wait(PATIENCE)
        nq.shutdown(timeout=10)
        with new(backend=backend) as again:
            assert self.status_of(again, job_id) is JobStatus.PROCESSED

    def test_forced_shutdown_cancels_and_keeps_the_job(self, backend: Backend) -> None:
        entered = threading.Event()
        saw_cancel: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            entered.set()
            saw_cancel.append(context.cancelled.wait(PATIENCE))

        nq = new(backend=backend)
        nq.start("forced", handler)
        job_id = nq.enqueue(Job(queue="forced", payload={}))
        assert entered.wait(PATIENCE)
        start = time.monotonic()
        nq.shutdown(timeout=0.2)
        assert time.monotonic() - start < 3
        assert saw_cancel == [True]
        assert neoq_threads() == []
        with new(backend=backend) as again:
            job = again.get_job(job_id)
            assert job is not None and job.status is JobStatus.NEW
