"""Part of ``BackendSuite``: hardening.

Nothing that escapes an attempt stops a queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..app import Neoq, new
from ..backends.base import Backend
from ..handler import Handler
from ..job import Job, JobStatus
from .base import SuiteBase
from .helpers import no_backoff, utc_now, wait_for


class HardeningTests(SuiteBase):
    """Whatever escapes an attempt (a ``BaseException``, a broken callback or backoff, an error text
    no store holds as is) fails that attempt and never stops the queue."""

    # -- nothing that escapes an attempt stops a queue -------------------------------------

    def test_handler_raising_any_base_exception_fails_the_attempt(self, nq: Neoq) -> None:
        raised: dict[str, BaseException] = {
            "exit": SystemExit(3),
            "interrupt": KeyboardInterrupt(),
            "generator": GeneratorExit("closed"),
        }

        def handler(job: Job) -> None:
            if "raise" in job.payload:
                raise raised[job.payload["raise"]]

        nq.start("escape", Handler(handler, concurrency=1, max_retries=1, backoff=no_backoff))
        ids = {kind: nq.enqueue(Job(queue="escape", payload={"raise": kind})) for kind in raised}
        expected = {"exit": "SystemExit: 3", "interrupt": "KeyboardInterrupt", "generator": "GeneratorExit: closed"}
        for kind, job_id in ids.items():
            job = self.wait_status(nq, job_id, JobStatus.FAILED)
            assert (job.error, job.attempts, job.retries) == (expected[kind], 2, 1)
        self.assert_serves_next(nq, "escape")

    def test_recovery_callback_raising_system_exit_is_logged(self, backend: Backend) -> None:
        def recover(job: Job, exc: BaseException) -> None:
            raise SystemExit("a callback that exits")

        def handler(job: Job) -> None:
            if "bad" in job.payload:
                raise ValueError("bad")

        with new(backend=backend, recovery_callback=recover, shutdown_timeout=5) as nq:
            nq.start("recover-exit", Handler(handler, concurrency=1, max_retries=0))
            job_id = nq.enqueue(Job(queue="recover-exit", payload={"bad": 1}))
            job = self.wait_status(nq, job_id, JobStatus.FAILED)
            assert job.error == "ValueError: bad"
            self.assert_serves_next(nq, "recover-exit")

    def test_backoff_beyond_100_years_is_clamped(self, nq: Neoq) -> None:
        def handler(job: Job) -> None:
            if "bad" in job.payload:
                raise ValueError("later")

        nq.start("far-retry", Handler(handler, concurrency=1, max_retries=3, backoff=lambda retries: 1e12))
        before = utc_now()
        job_id = nq.enqueue(Job(queue="far-retry", payload={"bad": 1}))
        job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.retries == 1 and j)
        assert job.status is JobStatus.NEW and job.error == "ValueError: later"
        years = (job.run_after - before).total_seconds() / (365.25 * 86400)
        assert 99.9 < years <= 100.01, job.run_after
        # A retry due after the job's deadline fails it at once, as with any delay.
        short = nq.enqueue(Job(queue="far-retry", payload={"bad": 2}, deadline=utc_now() + timedelta(days=1)))
        job = self.wait_status(nq, short, JobStatus.FAILED)
        assert job.error == "ValueError: later" and job.attempts == 1
        self.assert_serves_next(nq, "far-retry")

    def test_broken_backoff_retries_after_a_second(self, nq: Neoq) -> None:
        def raises(retries: int) -> float:
            raise SystemExit("a backoff that exits")

        backoffs: dict[str, Callable[[int], Any]] = {
            "raises": raises,
            "nan": lambda retries: float("nan"),
            "text": lambda retries: "soon",
        }
        times: dict[str, list[float]] = {kind: [] for kind in backoffs}

        def handler(job: Job) -> None:
            if "ok" not in job.payload:
                times[job.queue[len("broken-") :]].append(time.monotonic())
                if job.retries == 0:
                    raise ValueError("once")

        ids = {}
        for kind, backoff in backoffs.items():
            nq.start(f"broken-{kind}", Handler(handler, concurrency=1, max_retries=2, backoff=backoff))
            ids[kind] = nq.enqueue(Job(queue=f"broken-{kind}", payload={}))
        for kind, job_id in ids.items():
            job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
            assert job.retries == 1 and job.attempts == 2
            first, second = times[kind]
            assert second - first >= 0.9, (kind, second - first)  # the fallback delay: 1 s
            self.assert_serves_next(nq, f"broken-{kind}")

    def test_error_text_with_lone_surrogate_and_nul_is_stored(self, nq: Neoq) -> None:
        """An exception message no store can hold as is (``os.fsdecode`` of a Latin-1 file name) is
        kept with backslash escapes, the same on every backend, on a retry and on the final failure."""
        name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # os.fsdecode's result on a UTF-8 system

        def handler(job: Job) -> None:
            if "ok" not in job.payload:
                raise OSError(f"cannot open {name}\x00")

        nq.start("surrogate", Handler(handler, concurrency=1, max_retries=1, backoff=lambda retries: 0.2))
        job_id = nq.enqueue(Job(queue="surrogate", payload={}))
        expected = "OSError: cannot open caf\\udce9.txt\\x00"
        waiting = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.retries == 1 and j)
        assert waiting.error == expected
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error == expected and job.attempts == 2
        self.assert_serves_next(nq, "surrogate")
