"""The worker runtime's own threads: they outlive whatever fails inside them, and never hold the process.

The behaviour every backend shares (handlers raising any ``BaseException``, broken backoffs,
far deadlines) is in the backend suite; these tests break neoq's machinery itself: a backend that
raises what it must not, a clock that fails in the watchdog, a handler that never returns.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends.base import Claim, Outcome
from neoq.backends.memory import MemoryBackend
from neoq.clock import Clock
from neoq.context import job_context
from neoq.testing import wait_for
from neoq.worker import claim_loop_threads


def errors_logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The ERROR records that contain ``text`` and carry a traceback."""
    return [r for r in caplog.records if r.levelno == logging.ERROR and text in r.getMessage() and r.exc_info]


def status(nq: neoq.Neoq, job_id: str) -> JobStatus | None:
    job = nq.get_job(job_id)
    return None if job is None else job.status


class FailingOnce(MemoryBackend):
    """A memory store whose ``method`` raises ``error`` on its first call from a neoq thread."""

    def __init__(self, method: str, error: BaseException) -> None:
        super().__init__()
        self.method = method
        self.error: BaseException | None = error

    def _trip(self, method: str) -> None:
        if method == self.method and self.error is not None and threading.current_thread().name.startswith("neoq"):
            error, self.error = self.error, None
            raise error

    def claim(self, queue: str, timeout: float) -> Claim | None:
        self._trip("claim")
        return super().claim(queue, timeout)

    def settle(self, claim: Claim, outcome: Outcome) -> None:
        self._trip("settle")
        super().settle(claim, outcome)


def test_a_claim_loop_that_dies_is_started_again(caplog: pytest.LogCaptureFixture) -> None:
    # A backend raising what no claim loop catches (SystemExit) ended the loop: at concurrency 1
    # the queue stopped for good, with nothing logged.
    store = FailingOnce("claim", SystemExit("a backend that exits"))
    with neoq.new(backend=store, shutdown_timeout=5) as nq:
        nq.start("restart", Handler(lambda job: None, concurrency=1))
        job_id = nq.enqueue(Job(queue="restart", payload={}))
        wait_for(lambda: status(nq, job_id) is JobStatus.PROCESSED)
    assert store.error is None
    assert errors_logged(caplog, "a claim loop of queue 'restart' failed; starting it again")


@pytest.mark.parametrize("ending", ["returns", "raises", "times out"])
def test_a_settle_that_fails_unexpectedly_puts_the_job_back(caplog: pytest.LogCaptureFixture, ending: str) -> None:
    # A settle raising something else than a NeoqError escaped (or, from the watchdog, was lost):
    # the job stayed claimed for good and, at concurrency 1, the queue stopped.
    store = FailingOnce("settle", RuntimeError("a backend bug"))
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempts)
        if len(attempts) == 1 and ending == "raises":
            raise ValueError("first attempt")
        if len(attempts) == 1 and ending == "times out":
            context = job_context()
            assert context is not None
            context.cancelled.wait(10)

    with neoq.new(backend=store, shutdown_timeout=5) as nq:
        nq.start("unsettled", Handler(handler, concurrency=1, timeout=0.3, max_retries=3, backoff=lambda n: 0))
        job_id = nq.enqueue(Job(queue="unsettled", payload={}))
        wait_for(lambda: status(nq, job_id) is JobStatus.PROCESSED)
        other = nq.enqueue(Job(queue="unsettled", payload={"next": 1}))
        wait_for(lambda: status(nq, other) is JobStatus.PROCESSED)
    assert attempts[:2] == [1, 2]  # it ran again
    assert errors_logged(caplog, "could not be settled") or errors_logged(
        caplog, "settling or reporting its attempt failed"
    )


def test_a_failure_after_the_settle_keeps_the_loop_and_the_job_claimed_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The settle of a processed attempt also claims the queue's next job; a failure after it (here
    # a logging filter that raises) ended the loop with that job claimed and never run.
    class RaisesOnce(logging.Filter):
        armed = True

        def filter(self, record: logging.LogRecord) -> bool:
            if self.armed and "processed" in record.getMessage():
                RaisesOnce.armed = False
                raise RuntimeError("a logging filter that fails (test)")
            return True

    log = logging.getLogger("neoq.test_worker.filtered")
    log.setLevel(logging.INFO)
    log.addFilter(RaisesOnce())
    store = MemoryBackend()
    with neoq.new(backend=store, logger=log, shutdown_timeout=5) as nq:
        ids = nq.enqueue_many([Job(queue="chained", payload={"n": n}) for n in range(3)])
        nq.start("chained", Handler(lambda job: None, concurrency=1))
        for job_id in ids:
            wait_for(lambda job_id=job_id: status(nq, job_id) is JobStatus.PROCESSED)  # type: ignore[misc]
    assert not RaisesOnce.armed
    assert errors_logged(caplog, "settling or reporting its attempt failed")


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["transaction", "lease"])
def test_a_settle_that_fails_inside_psycopg_rolls_back_and_the_job_runs_again(
    pg_clean: str, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    # The old failure itself: an error text psycopg cannot encode (UnicodeEncodeError, not a
    # NeoqError) escaped the settle and ended the claim loop, the job's transaction left open.
    from dataclasses import replace

    from neoq.backends.postgres import PostgresBackend

    class Unencodable(PostgresBackend):
        armed = True

        def settle(self, claim: Claim, outcome: Outcome) -> None:
            if self.armed and outcome.error is not None:
                self.armed = False
                if mode == "lease":  # the lease mode escapes error texts itself: fail as a bug would
                    raise UnicodeEncodeError("utf-8", "\udce9", 0, 1, "surrogates not allowed")
                outcome = replace(outcome, error="ValueError: caf\udce9")
            super().settle(claim, outcome)

    store = Unencodable(pg_clean, mode=mode)
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempts)
        if job.payload.get("fail") and len(attempts) == 1:
            raise ValueError("first attempt")

    with neoq.new(backend=store, shutdown_timeout=5) as nq:
        nq.start("unencodable", Handler(handler, concurrency=1, max_retries=3, backoff=lambda n: 0))
        job_id = nq.enqueue(Job(queue="unencodable", payload={"fail": True}))
        wait_for(lambda: status(nq, job_id) is JobStatus.PROCESSED)
        other = nq.enqueue(Job(queue="unencodable", payload={}))
        wait_for(lambda: status(nq, other) is JobStatus.PROCESSED)
    assert not store.armed and attempts[:2] == [1, 2]
    assert errors_logged(caplog, "could not be settled")


def test_the_watchdog_outlives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    class FailsInTheWatchdog(Clock):
        """The system clock, but its first monotonic read in the watchdog thread raises."""

        def __init__(self) -> None:
            self.armed = True

        def monotonic(self) -> float:
            if self.armed and threading.current_thread().name == "neoq-watchdog":
                self.armed = False
                raise RuntimeError("clock failure (test)")
            return time.monotonic()

    def slow(job: Job) -> None:
        context = job_context()
        assert context is not None
        context.cancelled.wait(10)

    clock = FailsInTheWatchdog()
    with neoq.new("memory://", clock=clock, shutdown_timeout=5) as nq:
        nq.start("watched", Handler(slow, concurrency=1, timeout=0.2, max_retries=0))
        ids = [nq.enqueue(Job(queue="watched", payload={"n": n})) for n in range(2)]
        for job_id in ids:
            wait_for(lambda job_id=job_id: status(nq, job_id) is JobStatus.FAILED)  # type: ignore[misc]
        jobs = [nq.get_job(job_id) for job_id in ids]
    assert not clock.armed
    assert all(job is not None and (job.error or "").startswith("JobTimeoutError") for job in jobs)
    assert errors_logged(caplog, "the watchdog failed")


def test_waits_longer_than_threading_allows() -> None:
    # ``threading`` refuses waits above TIMEOUT_MAX (OverflowError): a drain or a shutdown given
    # a very long timeout raised it instead of waiting.
    ran: list[int] = []
    nq = neoq.new("memory://")
    nq.handler("long")(lambda job: ran.append(1))
    nq.enqueue_many([Job(queue="long", payload={"n": n}) for n in range(3)])
    assert nq.drain(timeout=1e12) == 3
    release = threading.Event()
    nq.start("busy", lambda job: release.wait(10))
    nq.enqueue(Job(queue="busy", payload={}))
    wait_for(lambda: nq.stats().get("busy", {}).get("running") == 1 and nq._worker._running)
    threading.Timer(0.2, release.set).start()
    start = time.monotonic()
    nq.shutdown(timeout=1e12)
    assert time.monotonic() - start < 5
    assert ran == [1, 1, 1]


# -- a handler that never returns does not keep the process alive ---------------------------------

#: A script whose handler ignores cancellation: after shutdown(timeout=1) gave up on it, the process
#: must exit. ``{url}`` is the store.
STUCK_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import neoq

    entered = threading.Event()

    def stuck(job):
        entered.set()
        while True:  # ignores job_context().cancelled
            time.sleep(0.05)

    nq = neoq.new({url!r})
    nq.start("stuck", stuck, concurrency=1)
    job_id = nq.enqueue(neoq.Job(queue="stuck", payload={{}}))
    assert entered.wait(10)
    nq.shutdown(timeout=1)
    print("shut down", job_id, flush=True)
    """
)


def run_stuck_script(url: str) -> tuple[str, float]:
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NEOQ_URL", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", STUCK_SCRIPT.format(url=url)],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:  # the old behaviour: it never exits
        raise AssertionError(f"the script did not exit after shutdown; its output: {exc.stdout!r}") from None
    assert done.returncode == 0, done.stderr
    assert "shut down" in done.stdout
    return done.stdout.split()[-1], time.monotonic() - start


def test_a_stuck_handler_does_not_keep_a_script_alive() -> None:
    _, took = run_stuck_script("memory://")
    assert took < 15


@pytest.mark.postgres
def test_a_stuck_handler_does_not_keep_a_script_alive_on_postgres(pg_clean: str) -> None:
    job_id, _ = run_stuck_script(pg_clean)
    # The abandoned attempt was put back (its transaction rolled back): it runs again.
    with neoq.new(pg_clean) as nq:
        job = nq.get_job(job_id)
        assert job is not None and job.status is JobStatus.NEW
        ran: list[int] = []
        nq.start("stuck", lambda job: ran.append(job.attempts))
        wait_for(lambda: status(nq, job_id) is JobStatus.PROCESSED)
    assert ran and ran[0] >= 2


def test_queue_threads_are_daemon_threads() -> None:
    entered = threading.Event()
    names: list[tuple[str, bool]] = []

    def handler(job: Job) -> None:
        thread = threading.current_thread()
        names.append((thread.name, thread.daemon and thread in claim_loop_threads()))
        entered.set()

    with neoq.new("memory://") as nq:
        nq.start("daemons", handler, concurrency=2)
        nq.enqueue(Job(queue="daemons", payload={}))
        assert entered.wait(10)
    assert names and all(daemon for _, daemon in names), names


@pytest.mark.parametrize("url", ["memory://", "postgres"])
def test_a_loop_told_to_stop_while_its_job_runs_takes_no_next_job(url: str, request: pytest.FixtureRequest) -> None:
    # The settle of a processed job may claim the next one in the same step (settle_then_claim);
    # a loop whose stop came while the handler ran must settle only, on every backend.
    if url == "postgres":
        url = request.getfixturevalue("pg_clean")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def handler(job: Job) -> None:
        ran.append(job.payload["n"])
        started.set()
        assert release.wait(10)

    with neoq.new(url) as nq:
        first = nq.enqueue(Job(queue="q", payload={"n": "first"}))
        second = nq.enqueue(Job(queue="q", payload={"n": "second"}))
        nq.start("q", Handler(handler, concurrency=1))
        assert started.wait(10)
        stopper = threading.Thread(target=nq.shutdown, kwargs={"timeout": 10})
        stopper.start()
        runners = nq._worker._runners.values()  # the runtime's stop flag, set by shutdown
        wait_for(lambda: all(runner.stopping.is_set() for runner in runners), timeout=10)
        release.set()
        stopper.join(15)
        assert not stopper.is_alive()
    assert ran == ["first"]  # a chained claim would have run before shutdown() returned
    if url.startswith("postgres"):
        with neoq.new(url) as reader:
            assert status(reader, first) is JobStatus.PROCESSED
            assert status(reader, second) is JobStatus.NEW
