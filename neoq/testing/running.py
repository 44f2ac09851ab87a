"""Part of ``BackendSuite``: running.

Handlers, retries and backoff, future jobs, timeouts, deadlines, concurrency limits.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ..app import Neoq, new
from ..backends.base import Backend
from ..context import current_job, job_context
from ..errors import ConfigurationError
from ..handler import Handler
from ..job import Job, JobStatus
from .base import SuiteBase
from .helpers import PATIENCE, no_backoff, utc_now, wait_for


class RunningTests(SuiteBase):
    """Running jobs: handlers, retries and backoff, future jobs, timeouts, deadlines and concurrency."""

    # -- running and retrying ------------------------------------------------------------

    def test_handler_runs_and_job_is_processed(self, nq: Neoq) -> None:
        seen: list[tuple[Any, ...]] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            seen.append((job.payload["n"], current_job() is job, context.job is job, context.cancelled.is_set()))

        assert current_job() is None and job_context() is None
        nq.start("run", handler)
        job_id = nq.enqueue(Job(queue="run", payload={"n": 7}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert seen == [(7, True, True, False)]
        assert job.attempts == 1 and job.retries == 0 and job.error is None
        assert job.ran_at is not None and job.created_at is not None and job.ran_at >= job.created_at

    def test_failing_job_runs_max_retries_plus_one_times(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(job.retries)
            raise ValueError(f"boom {len(runs)}")

        nq.start("fail", Handler(handler, max_retries=2, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="fail", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert runs == [0, 1, 2]
        assert job.retries == 2 and job.attempts == 3
        assert job.error == "ValueError: boom 3"

    def test_any_error_text_is_stored(self, nq: Neoq) -> None:
        """Quotes, braces, newlines, non-ASCII and a NUL (kept as ``\\x00``) in an error survive the store."""
        message = 'it\'s {1,2} \\ "quoted" NULL\nline two \u00e9\u4e2d \x00 end'

        def handler(job: Job) -> None:
            raise ValueError(message)

        nq.start("errors", Handler(handler, max_retries=0))
        job_id = nq.enqueue(Job(queue="errors", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.attempts == 1
        assert job.error == "ValueError: " + message.replace("\x00", "\\x00")

    def test_job_max_retries_overrides_handler(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(1)
            raise KeyError("k")

        nq.start("override", Handler(handler, max_retries=5, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="override", payload={}, max_retries=0))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert len(runs) == 1 and job.error == "KeyError: 'k'"

    def test_success_on_last_attempt_is_processed(self, nq: Neoq) -> None:
        def handler(job: Job) -> None:
            if job.retries < 3:
                raise RuntimeError("not yet")

        nq.start("last", Handler(handler, max_retries=3, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="last", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.retries == 3 and job.attempts == 4 and job.error is None

    def test_retry_waits_for_backoff_and_keeps_error(self, nq: Neoq) -> None:
        times: list[float] = []

        def handler(job: Job) -> None:
            times.append(time.monotonic())
            if len(times) == 1:
                raise ValueError("first")

        calls: list[int] = []

        def backoff(retries: int) -> timedelta:
            calls.append(retries)
            return timedelta(milliseconds=300)

        nq.start("backoff", Handler(handler, max_retries=3, backoff=backoff))
        job_id = nq.enqueue(Job(queue="backoff", payload={}))

        def retry_waiting() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.retries == 1 else None

        waiting = wait_for(retry_waiting)
        assert waiting.error == "ValueError: first" or waiting.status is JobStatus.PROCESSED
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert calls == [1]
        assert times[1] - times[0] >= 0.29
        assert job.error is None and job.retries == 1

    def test_recovery_callback_gets_job_and_exception(self, backend: Backend) -> None:
        got: list[tuple[str | None, str]] = []
        done = threading.Event()

        def recover(job: Job, exc: BaseException) -> None:
            got.append((job.id, repr(exc)))
            done.set()
            raise RuntimeError("a broken callback is logged, never raised")

        def handler(job: Job) -> None:
            raise ValueError("bad")

        with new(backend=backend, recovery_callback=recover) as nq:
            nq.start("recover", Handler(handler, max_retries=0))
            job_id = nq.enqueue(Job(queue="recover", payload={}))
            assert done.wait(PATIENCE)
            self.wait_status(nq, job_id, JobStatus.FAILED)
        assert got == [(job_id, "ValueError('bad')")]

    def test_future_job_waits_for_run_after(self, nq: Neoq) -> None:
        started: list[datetime] = []
        nq.start("future", lambda job: started.append(utc_now()))
        when = utc_now() + timedelta(milliseconds=400)
        job_id = nq.enqueue(Job(queue="future", payload={}, run_after=when))
        self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert started and started[0] >= when

    # -- timeouts and deadlines ----------------------------------------------------------

    def test_timeout_fails_attempt_without_waiting_for_handler(self, nq: Neoq) -> None:
        release = threading.Event()
        cancelled: list[bool] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            cancelled.append(context.cancelled.wait(PATIENCE))
            release.wait(PATIENCE)

        nq.start("slow", Handler(handler, timeout=0.2, max_retries=0))
        job_id = nq.enqueue(Job(queue="slow", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error is not None and job.error.startswith("JobTimeoutError:")
        wait_for(lambda: cancelled)  # set before the failure was stored; the handler wakes a moment later
        assert cancelled == [True]
        release.set()  # the late return changes nothing
        time.sleep(0.05)
        after = nq.get_job(job_id)
        assert after is not None and after.status is JobStatus.FAILED and after.error == job.error

    def test_deadline_passed_before_start_fails_without_running(self, nq: Neoq) -> None:
        runs: list[int] = []
        nq.start("expired", lambda job: runs.append(1))
        job_id = nq.enqueue(Job(queue="expired", payload={}, deadline=utc_now() - timedelta(seconds=1)))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert runs == []
        assert job.error is not None and job.error.startswith("DeadlineExceededError:")

    def test_deadline_while_running_fails_and_is_not_retried(self, nq: Neoq) -> None:
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(1)
            context = job_context()
            assert context is not None and context.time_remaining() <= 0.5
            context.cancelled.wait(PATIENCE)

        nq.start("deadline", Handler(handler, timeout=30, max_retries=5, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="deadline", payload={}, deadline=utc_now() + timedelta(milliseconds=300)))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error is not None and job.error.startswith("DeadlineExceededError:")
        assert runs == [1]

    def test_far_deadline_without_timeout_keeps_timeouts_enforced(self, nq: Neoq) -> None:
        """While a job with a deadline in year 8999 and no timeout runs, the watchdog (which waits
        for the earliest end) still ends another queue's attempts at their timeout."""
        entered, release = threading.Event(), threading.Event()

        def far(job: Job) -> None:
            entered.set()
            release.wait(PATIENCE)

        def slow(job: Job) -> None:
            context = job_context()
            assert context is not None
            context.cancelled.wait(PATIENCE)

        nq.start("far-deadline", Handler(far, concurrency=1, timeout=None))
        far_id = nq.enqueue(Job(queue="far-deadline", payload={}, deadline=datetime(8999, 1, 1, tzinfo=timezone.utc)))
        assert entered.wait(PATIENCE)
        nq.start("short-timeout", Handler(slow, concurrency=1, timeout=0.2, max_retries=0))
        try:
            job = self.wait_status(nq, nq.enqueue(Job(queue="short-timeout", payload={})), JobStatus.FAILED)
        finally:
            release.set()
        assert job.error is not None and job.error.startswith("JobTimeoutError:")
        self.wait_status(nq, far_id, JobStatus.PROCESSED)
        self.assert_serves_next(nq, "far-deadline")

    def test_timeouts_above_100_years_are_refused(self, nq: Neoq) -> None:
        """Handler timeouts go up to 100 years; a longer one (it overflowed the watchdog's wait)
        is refused when the handler is made."""
        with pytest.raises(ConfigurationError, match="100 years"):
            Handler(lambda job: None, timeout=timedelta(days=400 * 365))
        with pytest.raises(ConfigurationError, match="100 years"):
            nq.start("too-long", lambda job: None, timeout=1e12)
        nq.start("longest", Handler(lambda job: None, concurrency=1, timeout=timedelta(days=36524)))
        self.assert_serves_next(nq, "longest")

    # -- concurrency ---------------------------------------------------------------------

    def test_concurrency_holds_for_every_queue(self, nq: Neoq) -> None:
        limits = {"c1": 1, "c2": 2, "c3": 3}
        lock = threading.Lock()
        running = dict.fromkeys(limits, 0)
        peak = dict.fromkeys(limits, 0)

        def handler(job: Job) -> None:
            with lock:
                running[job.queue] += 1
                peak[job.queue] = max(peak[job.queue], running[job.queue])
            time.sleep(0.05)
            with lock:
                running[job.queue] -= 1

        # Everything is queued before the handlers start, so each queue can reach its limit at once.
        ids = nq.enqueue_many([Job(queue=q, payload={"n": n}) for n in range(12) for q in limits])
        for queue, limit in limits.items():
            nq.start(queue, Handler(handler, concurrency=limit))
        for job_id in ids:
            self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert peak == limits
