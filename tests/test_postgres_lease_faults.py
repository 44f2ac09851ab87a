"""The lease mode under faults (issue 9, point 2): crash recovery without a leader, and fencing.

Workers are real processes (tests/lease_worker.py) with a 1 s lease. A SIGKILLed worker's job is
claimed again by another worker once the lease expires, with the attempt counted; a job that
always kills its worker ends FAILED after max_retries + 1 attempts; a worker frozen with SIGSTOP
past its lease, then resumed, finds its late completion ignored: the re-run's outcome stands.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lease_worker import EFFECTS_TABLE
from pgfixtures import LeaseWorker, unique_name, wait_until

import neoq
from neoq import Job, JobStatus

pytestmark = pytest.mark.postgres

LEASE = 1.0


@pytest.fixture
def lease_db(pg_clean: str) -> str:
    with psycopg.connect(pg_clean, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE)
        conn.execute("TRUNCATE neoq_lease_effects")
    return pg_clean


@pytest.fixture
def workers(lease_db: str) -> Iterator[Callable[..., LeaseWorker]]:
    started: list[LeaseWorker] = []

    def start(queue: str, **settings: Any) -> LeaseWorker:
        spec = {
            "url": lease_db,
            "app": unique_name("neoq-lease-worker"),
            "options": {"lease": LEASE},
            "queues": {queue: {"concurrency": 2, **settings}},
        }
        worker = LeaseWorker(spec)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def client(lease_db: str) -> Iterator[neoq.Neoq]:
    with neoq.new(lease_db, application_name=unique_name("neoq-lease-test")) as nq:
        yield nq


def effects(url: str, job_id: str) -> list[tuple[int, int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, attempt, what FROM neoq_lease_effects WHERE job_id = %s ORDER BY at", [int(job_id)]
        ).fetchall()
    return [(int(pid), int(attempt), str(what)) for pid, attempt, what in rows]


def failed(client: neoq.Neoq, job_id: str) -> bool:
    job = client.get_job(job_id)
    return job is not None and job.status is JobStatus.FAILED


def test_sigkilled_worker_job_runs_again_after_its_lease_expires(
    lease_db: str, workers: Callable[..., LeaseWorker], client: neoq.Neoq, tmp_path: Path
) -> None:
    queue = unique_name("lease-kill")
    flag = tmp_path / "started"
    first = workers(queue)
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "block_once", "flag": str(flag)}))
    wait_until(flag.exists, 20, "the first worker started the job")
    assert int(flag.read_text()) == first.pid
    first.kill()  # SIGKILL mid-job: no outcome, no clean-up, its lease simply stops being renewed
    second = workers(queue)
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.PROCESSED and j,
        20,
        "the job ran again elsewhere",
    )
    assert job.attempts == 2
    assert effects(lease_db, job_id) == [(second.pid, 2, "done")]


def test_a_leased_job_reads_running_until_its_dead_worker_s_lease_expires(
    workers: Callable[..., LeaseWorker], client: neoq.Neoq, tmp_path: Path
) -> None:
    queue = unique_name("lease-shown")
    flag = tmp_path / "started"
    worker = workers(queue)
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "block_once", "flag": str(flag)}))
    wait_until(flag.exists, 20, "the worker started the job")
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.RUNNING and j, 1.0, "running"
    )
    assert job.attempts == 1 and job.ran_at is not None and job.finished_at is None
    assert [j.id for j in client.list_jobs(queue=queue, status=JobStatus.RUNNING)] == [job_id]
    assert client.stats()[queue] == {"new": 0, "running": 1, "processed": 0, "failed": 0, "cancelled": 0}
    # Past a few heartbeats the lease is still renewed: still running.
    time.sleep(LEASE * 1.5)
    assert client.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    worker.kill()  # SIGKILL: the lease is no longer renewed
    killed = time.monotonic()
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.NEW and j, LEASE + 2.0, "new again"
    )
    print(f"\nread NEW {time.monotonic() - killed:.3f}s after SIGKILL (lease {LEASE}s)")
    assert job.attempts == 1 and job.finished_at is None
    assert client.stats()[queue]["running"] == 0


def test_a_job_that_always_kills_its_worker_ends_failed(workers: Callable[..., LeaseWorker], client: neoq.Neoq) -> None:
    queue = unique_name("lease-poison")
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "kill"}, max_retries=1))
    deaths = 0
    worker = workers(queue)
    while True:
        job = client.get_job(job_id)
        assert job is not None
        if job.status is JobStatus.FAILED:
            break
        if not worker.alive():
            deaths += 1
            assert deaths <= 2, "the poison job ran more than max_retries + 1 times"
            worker = workers(queue)
        wait_until(
            lambda current=worker: not current.alive() or failed(client, job_id),  # type: ignore[misc]
            30,
            "the worker died or the job failed",
        )
    assert deaths == 2
    assert job.error is not None and job.error.startswith("WorkerLostError: 2 attempts started and none finished")
    assert job.attempts == 3


def test_a_frozen_worker_past_its_lease_cannot_overwrite_the_rerun(
    lease_db: str, workers: Callable[..., LeaseWorker], client: neoq.Neoq, tmp_path: Path
) -> None:
    queue = unique_name("lease-freeze")
    flag = tmp_path / "started"
    frozen = workers(queue)
    # Attempt 1 sleeps 3 s then completes; attempt 2 (elsewhere) fails for good (max_retries=1).
    job_id = client.enqueue(
        Job(queue=queue, payload={"mode": "late_once", "flag": str(flag), "sleep": 3.0}, max_retries=1)
    )
    wait_until(flag.exists, 20, "the first worker started the job")
    frozen.signal(signal.SIGSTOP)  # frozen: no heartbeat, the lease runs out
    rerun = workers(queue)
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.FAILED and j,
        20,
        "the re-run failed the job for good",
    )
    assert job.attempts == 2 and job.error == "RuntimeError: attempt 2 fails"
    frozen.signal(signal.SIGCONT)
    # The zombie finishes attempt 1 and settles PROCESSED: its fencing token no longer matches.
    wait_until(lambda: (frozen.pid, 1, "late") in effects(lease_db, job_id), 20, "the frozen worker finished late")
    frozen.stop()  # shutdown writes every outcome still waiting: the late one has been tried
    rerun.stop()
    job = client.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED and job.error == "RuntimeError: attempt 2 fails" and job.attempts == 2
    assert effects(lease_db, job_id) == [(rerun.pid, 2, "rerun"), (frozen.pid, 1, "late")]
