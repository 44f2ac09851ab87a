"""Timing promises on the in-memory backend, measured (medians, with honest slack for shared machines)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends import MemoryBackend
from neoq.backends.base import Claim, Outcome
from neoq.testing import wait_for

ROUNDS = 7


class SettleClock(MemoryBackend):
    """Records when each outcome was stored: the moment a failure is 'recorded'."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: dict[str, tuple[float, Outcome]] = {}

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        super().settle(claim, outcome)
        self.settled[claim.job.id or ""] = (time.monotonic(), outcome)


def test_timeout_is_recorded_within_20ms() -> None:
    backend = SettleClock()
    entered: dict[str, float] = {}
    late_returns: list[str] = []

    def handler(job: Job) -> None:
        entered[job.id or ""] = time.monotonic()
        context = neoq.job_context()
        assert context is not None
        assert context.cancelled.wait(5)
        time.sleep(0.05)  # ignore the cancellation for a while: the late return must change nothing
        late_returns.append(job.id or "")

    with neoq.new(backend=backend) as nq:
        nq.start("timeouts", Handler(handler, timeout=0.15, max_retries=0, concurrency=ROUNDS))
        ids = [nq.enqueue(Job(queue="timeouts", payload={"n": n})) for n in range(ROUNDS)]
        for job_id in ids:
            wait_for(lambda job_id=job_id: nq.get_job(job_id).status is JobStatus.FAILED)  # type: ignore[union-attr]
        wait_for(lambda: len(late_returns) == ROUNDS)
        lateness = []
        for job_id in ids:
            at, outcome = backend.settled[job_id]
            assert outcome.error is not None and outcome.error.startswith("JobTimeoutError:")
            lateness.append(at - (entered[job_id] + 0.15))
            job = nq.get_job(job_id)
            assert job is not None and job.status is JobStatus.FAILED and job.error == outcome.error
    print(f"timeout recorded after the moment: median {statistics.median(lateness) * 1000:.2f} ms")
    assert statistics.median(lateness) < 0.020
    assert max(lateness) < 0.100


def test_deadline_is_recorded_within_20ms() -> None:
    backend = SettleClock()
    deadlines: dict[str, datetime] = {}
    with neoq.new(backend=backend) as nq:

        def handler(job: Job) -> None:
            context = neoq.job_context()
            assert context is not None and context.deadline == job.deadline
            context.cancelled.wait(5)

        nq.start("deadlines", Handler(handler, timeout=10, max_retries=3, concurrency=ROUNDS))
        ids = []
        for n in range(ROUNDS):
            deadline = datetime.now(timezone.utc) + timedelta(milliseconds=150)
            job_id = nq.enqueue(Job(queue="deadlines", payload={"n": n}, deadline=deadline))
            deadlines[job_id] = deadline
            ids.append(job_id)
        for job_id in ids:
            wait_for(lambda job_id=job_id: nq.get_job(job_id).status is JobStatus.FAILED)  # type: ignore[union-attr]
        lateness = []
        for job_id in ids:
            at, outcome = backend.settled[job_id]
            assert outcome.error is not None and outcome.error.startswith("DeadlineExceededError:")
            wall_at = datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - at)
            lateness.append((wall_at - deadlines[job_id]).total_seconds())
            assert nq.get_job(job_id).retries == 0  # type: ignore[union-attr]
    print(f"deadline recorded after the moment: median {statistics.median(lateness) * 1000:.2f} ms")
    assert statistics.median(lateness) < 0.020
    assert max(lateness) < 0.100


def test_future_jobs_start_within_20ms_after_run_after() -> None:
    started: dict[str, datetime] = {}
    done = threading.Event()

    def handler(job: Job) -> None:
        started[job.id or ""] = datetime.now(timezone.utc)
        if len(started) == ROUNDS:
            done.set()

    with neoq.new() as nq:
        nq.start("future", Handler(handler, concurrency=2))
        wanted: dict[str, datetime] = {}
        for n in range(ROUNDS):
            when = datetime.now(timezone.utc) + timedelta(milliseconds=100 + 37 * n)
            wanted[nq.enqueue(Job(queue="future", payload={"n": n}, run_after=when))] = when
        assert done.wait(10)
    lateness = [(started[job_id] - when).total_seconds() for job_id, when in wanted.items()]
    print(f"future job start after run_after: median {statistics.median(lateness) * 1000:.2f} ms")
    assert min(lateness) >= 0
    assert statistics.median(lateness) < 0.020
    assert max(lateness) < 0.100


def test_retry_starts_no_earlier_than_its_backoff() -> None:
    times: list[float] = []

    def handler(job: Job) -> None:
        times.append(time.monotonic())
        if job.retries < 2:
            raise RuntimeError("again")

    with neoq.new() as nq:
        nq.start("retry", Handler(handler, max_retries=2, backoff=lambda n: 0.1 * n))
        job_id = nq.enqueue(Job(queue="retry", payload={}))
        wait_for(lambda: nq.get_job(job_id).status is JobStatus.PROCESSED)  # type: ignore[union-attr]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.1 - 0.002 and gaps[1] >= 0.2 - 0.002
    # Upper bounds with slack for a loaded 2-core machine: a backoff read ten times too long would show.
    assert gaps[0] < 0.1 + 0.4 and gaps[1] < 0.2 + 0.4
