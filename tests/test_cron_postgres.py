"""Periodic jobs on PostgreSQL: exactly once per tick across processes, and missed ticks.

Real PostgreSQL (the ``pg_url`` fixture of tests/pgfixtures.py, a fresh database per test run);
never skipped under CI. Worker processes are real subprocesses running the same ``start_cron``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import neoq
from neoq import Handler, Job, JobStatus
from neoq.testing import wait_for

pytestmark = pytest.mark.postgres

UTC = timezone.utc

#: The worker process: serves one per-second schedule until SIGTERM. Ticks at a second divisible by 3
#: sleep 1.5 s (still running when the next two ticks come); ticks at second % 3 == 1 fail their first
#: attempt and wait 2 s for the retry (waiting when the next ticks come).
CHILD = textwrap.dedent(
    """
    import sys
    import time

    import neoq
    from neoq import Handler

    url, queue = sys.argv[1], sys.argv[2]

    def handler(job):
        second = int(job.payload["scheduled_at"][17:19])
        if second % 3 == 0:
            time.sleep(1.5)
        elif second % 3 == 1 and job.retries == 0:
            raise RuntimeError("the first attempt of this tick fails")

    nq = neoq.new(url, shutdown_timeout=10)
    nq.start_cron(
        "* * * * * *",
        Handler(handler, concurrency=4, timeout=10, max_retries=3, backoff=lambda retries: 2.0),
        queue=queue,
    )
    print("ready", flush=True)
    nq.run()
    """
)


class Worker:
    """One worker subprocess, its output kept in files for the failure message."""

    def __init__(self, pg_url: str, queue: str, tmp_path: Path, index: int) -> None:
        self.out = tmp_path / f"worker{index}.out"
        self.err = tmp_path / f"worker{index}.err"
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_url, queue],
            stdout=self.out.open("w"),
            stderr=self.err.open("w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.output()}")
        return "ready" in self.out.read_text()

    def output(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()[-4000:]}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture
def queue() -> str:
    return f"cron-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(pg_url: str) -> Iterator[neoq.Neoq]:
    nq = neoq.new(pg_url, shutdown_timeout=10)
    try:
        yield nq
    finally:
        nq.shutdown(timeout=10)


def jobs_of(nq: neoq.Neoq, queue: str) -> list[Job]:
    return sorted(nq.list_jobs(queue=queue, limit=100_000), key=lambda job: job.payload["scheduled_at"])


def tick_of(job: Job) -> datetime:
    return datetime.fromisoformat(job.payload["scheduled_at"])


def assert_one_job_per_tick(jobs: list[Job]) -> list[datetime]:
    """Every tick from the first to the last has exactly one job; return the ticks."""
    found = [tick_of(job) for job in jobs]
    duplicates = sorted({tick for tick in found if found.count(tick) > 1})
    assert not duplicates, f"ticks enqueued more than once: {duplicates}"
    expected = [found[0] + timedelta(seconds=n) for n in range(len(found))]
    missing = sorted(set(expected) - set(found)) if found else []
    assert found == expected, f"ticks skipped: {missing or found}"
    return found


def finish_leftovers(nq: neoq.Neoq, queue: str) -> None:
    """Run the jobs the workers left waiting for a retry, so every job can be checked as PROCESSED."""
    nq.start(queue, Handler(lambda job: None, concurrency=4))
    wait_for(lambda: not nq.list_jobs(queue=queue, status="new"), timeout=30, interval=0.1)


@pytest.mark.slow
def test_three_processes_enqueue_each_tick_exactly_once(
    pg_url: str, client: neoq.Neoq, queue: str, tmp_path: Path
) -> None:
    workers = [Worker(pg_url, queue, tmp_path, index) for index in range(3)]
    try:
        for worker in workers:
            wait_for(worker.ready, timeout=60, interval=0.05)
        all_up = datetime.now(UTC)
        # 10 seconds with all three running the schedule, as the clock of the ticks counts them.
        wait_for(
            lambda: any(tick_of(job) >= all_up + timedelta(seconds=10) for job in jobs_of(client, queue)),
            timeout=40,
            interval=0.1,
        )
        for worker in workers:
            assert worker.stop() == 0, worker.output()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
    jobs = jobs_of(client, queue)
    ticks = assert_one_job_per_tick(jobs)
    assert sum(1 for tick in ticks if tick >= all_up) >= 10

    # Slow jobs were still running, and failed ones waiting for their retry, when the next tick was stored.
    by_tick = {tick_of(job): job for job in jobs}
    overlapped_running = overlapped_retrying = 0
    for tick, job in by_tick.items():
        following = by_tick.get(tick + timedelta(seconds=1))
        if following is None or following.created_at is None or job.ran_at is None:
            continue
        if tick.second % 3 == 0 and job.status is JobStatus.PROCESSED and job.ran_at < following.created_at:
            overlapped_running += following.created_at < job.ran_at + timedelta(seconds=1.5)
        if tick.second % 3 == 1 and job.retries == 1:
            overlapped_retrying += following.created_at < job.ran_at  # stored before the retry started
    assert overlapped_running >= 2, "no tick came while the previous tick's job was running"
    assert overlapped_retrying >= 2, "no tick came while the previous tick's job waited for its retry"

    # Every tick's job runs like any other: the failing ones were retried, and all end PROCESSED.
    finish_leftovers(client, queue)
    jobs = jobs_of(client, queue)
    assert all(job.status is JobStatus.PROCESSED for job in jobs), [(job.id, job.status) for job in jobs]
    failing = [job for job in jobs if tick_of(job).second % 3 == 1 and tick_of(job) < all_up + timedelta(seconds=8)]
    assert failing and all(job.retries == 1 and job.error is None for job in failing)


@pytest.mark.slow
def test_no_tick_is_skipped_while_one_process_is_up(
    pg_url: str, client: neoq.Neoq, queue: str, tmp_path: Path
) -> None:
    # Processes come and go (one is killed outright); at least one is always up, so no tick is lost.
    first = Worker(pg_url, queue, tmp_path, 0)
    second: Worker | None = None
    try:
        wait_for(first.ready, timeout=60, interval=0.05)
        second = Worker(pg_url, queue, tmp_path, 1)
        wait_for(second.ready, timeout=60, interval=0.05)
        both_up = datetime.now(UTC)
        wait_for(
            lambda: any(tick_of(job) >= both_up + timedelta(seconds=2) for job in jobs_of(client, queue)),
            timeout=30,
            interval=0.1,
        )
        first.stop(signal.SIGKILL)
        killed = datetime.now(UTC)
        wait_for(
            lambda: any(tick_of(job) >= killed + timedelta(seconds=3) for job in jobs_of(client, queue)),
            timeout=30,
            interval=0.1,
        )
        assert second.stop() == 0, second.output()
    finally:
        for worker in (first, second):
            if worker is not None and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
    ticks = assert_one_job_per_tick(jobs_of(client, queue))
    assert ticks[-1] >= killed + timedelta(seconds=3)


def wait_until(moment: datetime) -> None:
    wait_for(lambda: datetime.now(UTC) >= moment, timeout=30, interval=0.05)


def test_ticks_missed_while_no_process_runs_are_not_run_later(pg_url: str, queue: str) -> None:
    with neoq.new(pg_url) as nq:
        nq.start_cron("* * * * * *", lambda job: None, queue=queue)
        wait_for(lambda: len(jobs_of(nq, queue)) >= 2, timeout=15, interval=0.05)
    with neoq.new(pg_url) as nq:
        stopped_at = nq.backend.last_tick(queue)
        assert stopped_at is not None
        wait_until(stopped_at + timedelta(seconds=3.5))
        restarted = datetime.now(UTC)
        nq.start_cron("* * * * * *", lambda job: None, queue=queue)
        wait_for(lambda: tick_of(jobs_of(nq, queue)[-1]) > restarted + timedelta(seconds=1), timeout=15, interval=0.05)
        ticks = [tick_of(job) for job in jobs_of(nq, queue)]
    gap = [tick for tick in ticks if stopped_at < tick < restarted]
    assert gap == [], f"ticks of the downtime were run: {gap}"
    assert len(set(ticks)) == len(ticks)


def test_catch_up_enqueues_the_ticks_missed_while_no_process_ran(pg_url: str, queue: str) -> None:
    with neoq.new(pg_url) as nq:
        nq.start_cron("* * * * * *", lambda job: None, queue=queue)
        wait_for(lambda: len(jobs_of(nq, queue)) >= 2, timeout=15, interval=0.05)
    with neoq.new(pg_url) as nq:
        stopped_at = nq.backend.last_tick(queue)
        assert stopped_at is not None
        wait_until(stopped_at + timedelta(seconds=3.5))
        restarted = datetime.now(UTC)
        nq.start_cron("* * * * * *", lambda job: None, queue=queue, catch_up=timedelta(minutes=5))
        wait_for(lambda: tick_of(jobs_of(nq, queue)[-1]) > restarted + timedelta(seconds=1), timeout=15, interval=0.05)
        assert nq.backend.last_tick(queue) == tick_of(jobs_of(nq, queue)[-1])
        ticks = assert_one_job_per_tick(jobs_of(nq, queue))
    assert [tick for tick in ticks if stopped_at < tick < restarted]  # the downtime's ticks, caught up
