"""Part of ``BackendSuite``: outcomes.

What a job hands back: the handler's return value as ``Job.result`` (JSON, refused when strict JSON
cannot hold it or it is too large), the traceback of a failure, exception classes named with their
module, and ``job_context().progress()`` reports shown as ``Job.progress`` and ``Job.progress_note``.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ..app import Neoq
from ..backends.base import Claim
from ..context import job_context
from ..defaults import MAX_RESULT_SIZE, PROGRESS_INTERVAL
from ..errors import InvalidProgressError
from ..handler import Handler
from ..job import Job, JobStatus
from .base import SuiteBase
from .helpers import PATIENCE, no_backoff, wait_for

__all__ = ["OutcomesTests", "PaymentError"]


class PaymentError(Exception):
    """An application's exception: ``Job.error`` names it ``neoq.testing.outcomes.PaymentError``."""


def _charge(job: Job) -> None:
    raise PaymentError(f"card declined for order {job.payload['order']}")


class OutcomesTests(SuiteBase):
    """Results, tracebacks, qualified error names and progress reports."""

    # -- results -------------------------------------------------------------------------

    def test_result_is_the_return_value_as_json(self, nq: Neoq) -> None:
        def handler(job: Job) -> Any:
            return job.payload["value"]

        nq.start("result", handler)
        values: list[Any] = [{"total": 3, "rows": [1, 2.5, "é", None, True]}, 0, "text", [], False, None]
        ids = [nq.enqueue(Job(queue="result", payload={"value": value, "n": n})) for n, value in enumerate(values)]
        for job_id, value in zip(ids, values, strict=True):
            job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
            assert job.result == value and type(job.result) is type(value), (job.result, value)
            assert job.error is None and job.traceback is None

    def test_result_reads_as_a_fresh_copy(self, nq: Neoq) -> None:
        nq.start("result-copy", lambda job: {"items": [1, 2], "tuple": (3, 4)})
        job_id = nq.enqueue(Job(queue="result-copy"))
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.result == {"items": [1, 2], "tuple": [3, 4]}  # as JSON reads it back
        job.result["items"].append(3)
        again = nq.get_job(job_id)
        assert again is not None and again.result == {"items": [1, 2], "tuple": [3, 4]}

    def test_a_result_strict_json_cannot_hold_fails_the_job_without_retry(self, nq: Neoq) -> None:
        runs: list[int] = []
        returns: dict[str, Any] = {
            "object": object(),
            "set": {1, 2},
            "nan": {"x": math.nan},
            "key": {1: "one"},
            "nul": "a\x00b",
        }

        def handler(job: Job) -> Any:
            runs.append(1)
            return returns.get(job.payload.get("kind", ""))

        nq.start("bad-result", Handler(handler, max_retries=3, backoff=no_backoff))
        for kind, named in [("object", "object"), ("set", "set"), ("nan", "nan"), ("key", "1"), ("nul", "NUL")]:
            job_id = nq.enqueue(Job(queue="bad-result", payload={"kind": kind}))
            job = self.wait_status(nq, job_id, JobStatus.FAILED)
            assert job.attempts == 1 and job.retries == 0, "a result that cannot be stored is never retried"
            assert job.error is not None and job.error.startswith("InvalidJobError: "), job.error
            assert named in job.error, job.error
            assert job.result is None
        assert len(runs) == len(returns)
        self.assert_serves_next(nq, "bad-result")

    def test_an_oversize_result_fails_the_job_with_the_limit_named(self, nq: Neoq) -> None:
        nq.start("big-result", Handler(lambda job: "x" * MAX_RESULT_SIZE, max_retries=2))
        job_id = nq.enqueue(Job(queue="big-result"))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.attempts == 1 and job.result is None
        assert job.error is not None and job.error.startswith("InvalidJobError: "), job.error
        assert f"{MAX_RESULT_SIZE:,}" in job.error and "MAX_RESULT_SIZE" in job.error

    # -- errors and tracebacks -----------------------------------------------------------

    def test_error_names_the_qualified_class_and_traceback_is_kept(self, nq: Neoq) -> None:
        nq.start("charge", Handler(_charge, max_retries=0))
        job_id = nq.enqueue(Job(queue="charge", payload={"order": 7}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert job.error == "neoq.testing.outcomes.PaymentError: card declined for order 7"
        assert job.traceback is not None
        assert job.traceback.startswith("Traceback (most recent call last):"), job.traceback
        assert "in _charge" in job.traceback and "raise PaymentError(" in job.traceback
        assert job.traceback.rstrip().endswith("PaymentError: card declined for order 7")

    def test_builtin_errors_keep_their_bare_name(self, nq: Neoq) -> None:
        def handler(job: Job) -> None:
            raise KeyError("missing")

        nq.start("builtin-error", Handler(handler, max_retries=0))
        job = self.wait_status(nq, nq.enqueue(Job(queue="builtin-error")), JobStatus.FAILED)
        assert job.error == "KeyError: 'missing'"

    def test_a_timeout_keeps_where_the_handler_was_as_its_traceback(self, nq: Neoq) -> None:
        release = threading.Event()

        def stuck_in_a_call(job: Job) -> None:
            release.wait(PATIENCE)

        def handler(job: Job) -> None:
            stuck_in_a_call(job)

        nq.start("stuck", Handler(handler, timeout=0.2, max_retries=0))
        job = self.wait_status(nq, nq.enqueue(Job(queue="stuck")), JobStatus.FAILED)
        release.set()
        assert job.error is not None and job.error.startswith("JobTimeoutError: ")
        assert job.traceback is not None, "the handler's stack when its time ran out"
        assert "in handler" in job.traceback and "in stuck_in_a_call" in job.traceback
        assert job.traceback.rstrip().endswith(job.error)

    def test_traceback_is_kept_while_retrying_and_cleared_on_success(self, nq: Neoq) -> None:
        release = threading.Event()

        def handler(job: Job) -> str:
            if job.attempts == 1:
                raise ValueError("first attempt fails")
            release.wait(PATIENCE)
            return "second attempt succeeds"

        nq.start("retrying", Handler(handler, max_retries=1, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="retrying"))

        def failed_once() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.attempts == 2 and job.status is JobStatus.RUNNING else None

        running = wait_for(failed_once)
        assert running.error == "ValueError: first attempt fails"
        assert running.traceback is not None and "ValueError: first attempt fails" in running.traceback
        release.set()
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.error is None and job.traceback is None and job.result == "second attempt succeeds"

    def test_cancelling_a_retry_keeps_the_failure_it_retries(self, nq: Neoq) -> None:
        running = threading.Event()

        def handler(job: Job) -> None:
            if job.attempts == 1:
                raise ValueError("first attempt fails")
            context = job_context()
            assert context is not None
            running.set()
            context.cancelled.wait(PATIENCE)

        nq.start("cancel-retry", Handler(handler, max_retries=1, backoff=no_backoff))
        job_id = nq.enqueue(Job(queue="cancel-retry"))
        assert running.wait(PATIENCE)
        nq.cancel_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.CANCELLED)
        assert job.error == "ValueError: first attempt fails"
        assert job.traceback is not None and job.traceback.rstrip().endswith("ValueError: first attempt fails")

    def test_retry_job_clears_the_earlier_outcome(self, nq: Neoq) -> None:
        outcomes = iter(["fail", "ok"])

        def handler(job: Job) -> str:
            if next(outcomes) == "fail":
                context = job_context()
                assert context is not None
                context.progress(0.5)
                raise RuntimeError("once")
            return "done"

        nq.start("again", Handler(handler, max_retries=0))
        job_id = nq.enqueue(Job(queue="again"))
        failed = self.wait_status(nq, job_id, JobStatus.FAILED)
        assert failed.traceback is not None and failed.progress == 0.5
        nq.retry_job(job_id)
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.result == "done" and job.traceback is None and job.error is None and job.progress is None

    # -- progress --------------------------------------------------------------------------

    def test_progress_refuses_bad_input_saying_what_to_fix(self, nq: Neoq) -> None:
        refused: list[str] = []

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            for fraction, note in [(-0.1, None), (1.5, None), (math.nan, None), ("half", None), (True, None)]:
                try:
                    context.progress(fraction, note)  # type: ignore[arg-type]
                except InvalidProgressError as exc:
                    refused.append(str(exc))
            for note in ["x" * 5000, 7]:
                try:
                    context.progress(0.5, note)  # type: ignore[arg-type]
                except InvalidProgressError as exc:
                    refused.append(str(exc))
            context.progress(1, "whole")

        nq.start("bad-progress", handler)
        job = self.wait_status(nq, nq.enqueue(Job(queue="bad-progress")), JobStatus.PROCESSED)
        assert len(refused) == 7, refused
        assert all("fraction" in text for text in refused[:5]) and all("note" in text for text in refused[5:])
        assert job.progress == 1.0 and job.progress_note == "whole"

    def test_progress_shows_the_latest_report_and_costs_few_writes(self, nq: Neoq) -> None:
        backend = nq.backend
        writes: list[float] = []
        store = backend.progress

        def counting(claim: Claim, fraction: float, note: str | None) -> None:
            writes.append(fraction)
            store(claim, fraction, note)

        backend.progress = counting  # type: ignore[method-assign]
        release = threading.Event()
        loop_seconds = 1.0

        def handler(job: Job) -> None:
            context = job_context()
            assert context is not None
            end, n = time.monotonic() + loop_seconds, 0
            while time.monotonic() < end:  # a tight loop: thousands of reports
                n += 1
                context.progress(min(n / 1e9, 0.5), f"step {n}")
            context.progress(0.75, "three quarters")
            release.wait(PATIENCE)

        nq.start("progress", handler)
        job_id = nq.enqueue(Job(queue="progress"))
        began = time.monotonic()

        def latest() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.progress == 0.75 else None

        job = wait_for(latest, PATIENCE)
        elapsed = time.monotonic() - began
        assert job.status is JobStatus.RUNNING and job.progress_note == "three quarters"
        assert elapsed < loop_seconds + 1.0 + 0.5, f"the last report was seen {elapsed:.2f}s after the start"
        # At most one write per PROGRESS_INTERVAL, plus the first and the last: a few a second.
        assert len(writes) <= elapsed / PROGRESS_INTERVAL + 3, f"{len(writes)} writes in {elapsed:.2f}s"
        release.set()
        job = self.wait_status(nq, job_id, JobStatus.PROCESSED)
        assert job.progress == 0.75 and job.progress_note == "three quarters"

    def test_a_report_just_before_returning_is_kept(self, nq: Neoq) -> None:
        def handler(job: Job) -> int:
            context = job_context()
            assert context is not None
            for n in range(1, 101):
                context.progress(n / 100, f"{n} of 100")
            return 100

        nq.start("last-report", handler)
        job = self.wait_status(nq, nq.enqueue(Job(queue="last-report")), JobStatus.PROCESSED)
        assert (job.progress, job.progress_note, job.result) == (1.0, "100 of 100", 100)

    def test_jobs_without_reports_have_no_progress(self, nq: Neoq) -> None:
        nq.start("no-progress", lambda job: None)
        job = self.wait_status(nq, nq.enqueue(Job(queue="no-progress")), JobStatus.PROCESSED)
        assert job.progress is None and job.progress_note is None and job.result is None
