"""Several worker processes on one database: acceptance points 4 (many processes), 5 (SIGKILL,
poison jobs) and 6 (timing across processes and session time zones), plus cross-process cancel."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from pgfixtures import WorkerProcess, unique_name, wait_until

import neoq
from neoq import Job, JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def workers() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; every one still alive is killed after the test."""
    started: list[WorkerProcess] = []

    def start(url: str, queues: dict[str, dict[str, Any]], **options: Any) -> WorkerProcess:
        worker = WorkerProcess({"url": url, "app": unique_name("neoq-proc"), "queues": queues, "options": options})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def client(pg_effects: str) -> Iterator[neoq.Neoq]:
    with neoq.new(pg_effects, application_name=unique_name("neoq-parent")) as nq:
        yield nq


def effects(url: str, *queues: str) -> list[tuple[Any, ...]]:
    """(job_id, queue, pid, attempt, started, run_after) rows the handlers committed."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT job_id, queue, pid, attempt, started, run_after FROM neoq_test_effects"
            " WHERE queue = ANY(%s) ORDER BY started",
            [list(queues)],
        ).fetchall()


def test_four_processes_run_2000_jobs_once_each_with_per_queue_concurrency(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess]
) -> None:
    tag = unique_name("many")
    limits = {f"{tag}-a": 2, f"{tag}-b": 3, f"{tag}-c": 1}
    procs = [workers(pg_effects, {q: {"concurrency": n} for q, n in limits.items()}) for _ in range(4)]
    names = list(limits)
    jobs = [Job(queue=names[n % 3], payload={"n": n, "sleep": 0.002}) for n in range(2000)]
    start = time.monotonic()
    ids = client.enqueue_many(jobs)

    def all_processed() -> bool:
        stats = client.stats()
        return sum(stats.get(q, {}).get("processed", 0) for q in names) == 2000

    wait_until(all_processed, 180, "2,000 jobs are processed")
    elapsed = time.monotonic() - start
    reports = [proc.stop() for proc in procs]

    rows = effects(pg_effects, *names)
    per_job: dict[int, int] = {}
    for row in rows:
        per_job[row[0]] = per_job.get(row[0], 0) + 1
    assert sorted(per_job) == sorted(int(i) for i in ids)
    assert set(per_job.values()) == {1}, "an effect was committed twice"
    assert len({row[2] for row in rows}) > 1, "the work was not shared between processes"
    for report in reports:
        for queue, peak in report["peak"].items():
            assert peak <= limits[queue], f"process {report['pid']} ran {peak} jobs of {queue} at once"
    for queue, limit in limits.items():
        # Each queue reached its own limit somewhere: every queue got its own concurrency.
        assert max(r["peak"].get(queue, 0) for r in reports) == limit
    print(f"\n2,000 jobs, 4 processes, 3 queues: {elapsed:.2f}s ({2000 / elapsed:.0f} jobs/s); peaks {reports}")


def test_sigkill_mid_job_runs_the_job_again_elsewhere(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = unique_name("killed")
    first = workers(pg_effects, {queue: {"concurrency": 2}})
    flag = tmp_path / "running"
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "block_once", "flag": str(flag)}))
    wait_until(flag.exists, 30, "the first attempt runs")
    second = workers(pg_effects, {queue: {"concurrency": 2}})
    victim = first if int(flag.read_text()) == first.pid else second
    survivor = second if victim is first else first
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.PROCESSED and j, 30, "it ran again"
    )
    rows = effects(pg_effects, queue)
    assert len(rows) == 1
    _, _, pid, attempt, started, _ = rows[0]
    assert pid == survivor.pid and attempt == 2 and job.attempts == 2
    print(f"\nrun again {started - killed_at:.3f}s after SIGKILL")
    assert started - killed_at < 5


def test_another_process_sees_a_job_running_at_once_and_new_again_once_its_worker_is_killed(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = unique_name("shown")
    worker = workers(pg_effects, {queue: {"concurrency": 1}})
    flag = tmp_path / "running"
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "block_once", "flag": str(flag)}))
    wait_until(flag.exists, 30, "the attempt runs")
    started = flag.stat().st_mtime
    # The claim's row lock is visible to every session: RUNNING within a second of the start.
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.RUNNING and j, 1.0, "running"
    )
    print(f"\nread RUNNING {time.time() - started:.3f}s after the handler started")
    assert job.attempts == 1 and job.finished_at is None
    assert job.ran_at is not None and abs(job.ran_at.timestamp() - started) < 1.0  # the claim's start
    assert [j.id for j in client.list_jobs(queue=queue, status=JobStatus.RUNNING)] == [job_id]
    assert client.list_jobs(queue=queue, status=JobStatus.NEW) == []
    assert client.stats()[queue] == {"new": 0, "running": 1, "processed": 0, "failed": 0, "cancelled": 0}
    # The process dies: its session, its transaction and the row lock go with it, and the job is
    # waiting again at once (its lost attempt counted).
    killed = time.monotonic()
    os.kill(worker.pid, signal.SIGKILL)
    worker.proc.wait(10)
    job = wait_until(
        lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.NEW and j, 2.0, "new again"
    )
    print(f"read NEW {time.monotonic() - killed:.3f}s after SIGKILL")
    assert job.attempts == 1 and job.finished_at is None
    assert client.stats()[queue] == {"new": 1, "running": 0, "processed": 0, "failed": 0, "cancelled": 0}
    assert client.list_jobs(queue=queue, status=JobStatus.RUNNING) == []


def test_a_job_that_kills_its_worker_every_time_fails_after_max_retries_plus_one(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess]
) -> None:
    queue = unique_name("poison")
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "kill"}, max_retries=2))
    deaths = 0
    worker = workers(pg_effects, {queue: {"concurrency": 1}})
    end = time.monotonic() + 90
    while True:
        job = client.get_job(job_id)
        assert job is not None
        if job.status is JobStatus.FAILED:
            break
        assert time.monotonic() < end, f"the poison job is still {job.status} after {deaths} deaths"
        if not worker.alive():
            deaths += 1
            worker = workers(pg_effects, {queue: {"concurrency": 1}})
        time.sleep(0.02)
    assert deaths == 3  # max_retries + 1 attempts, each killed its worker
    assert job.attempts == 4  # the fourth claim saw the count and did not run it
    assert job.error is not None and job.error.startswith("WorkerLostError:")
    assert worker.alive()
    assert effects(pg_effects, queue) == []


def test_cancel_reaches_a_handler_in_another_process_within_a_second(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    queue = unique_name("cancel")
    workers(pg_effects, {queue: {"concurrency": 1}})
    flag = tmp_path / "flag"
    job_id = client.enqueue(Job(queue=queue, payload={"mode": "wait_cancel", "flag": str(flag)}))
    wait_until(flag.exists, 30, "the handler runs")
    asked = time.time()
    client.cancel_job(job_id)
    seen = Path(str(flag) + ".cancelled")
    wait_until(seen.exists, 5, "the handler sees the cancellation")
    delay = float(seen.read_text()) - asked
    wait_until(lambda: (j := client.get_job(job_id)) is not None and j.status is JobStatus.CANCELLED, 10, "cancelled")
    print(f"\ncancellation reached the other process's handler in {delay * 1000:.1f}ms")
    assert delay < 1.0


def test_a_job_enqueued_by_another_process_starts_within_20ms_at_the_median(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess]
) -> None:
    queue = unique_name("latency")
    workers(pg_effects, {queue: {"concurrency": 2}})
    # A first job warms the worker's connections up.
    warm = client.enqueue(Job(queue=queue, payload={"warm": True}))
    wait_until(lambda: client.get_job(warm).status is JobStatus.PROCESSED, 30, "the warm-up job ran")  # type: ignore[union-attr]
    latencies = []
    with psycopg.connect(pg_effects, autocommit=True) as conn:
        for n in range(40):
            sent = time.time()
            job_id = int(client.enqueue(Job(queue=queue, payload={"n": n})))

            def started(job_id: int = job_id) -> float | None:
                row = conn.execute("SELECT started FROM neoq_test_effects WHERE job_id = %s", [job_id]).fetchone()
                return None if row is None else float(row[0])

            latencies.append(wait_until(started, 10, f"job {job_id} ran", interval=0.002) - sent)
    median = statistics.median(latencies)
    print(f"\npickup by another process: median {median * 1000:.1f}ms, max {max(latencies) * 1000:.1f}ms")
    assert median < 0.020


def test_future_jobs_and_retries_start_on_time_whatever_the_session_timezone(
    pg_effects: str, client: neoq.Neoq, workers: Callable[..., WorkerProcess], pg_connect: Callable[..., Any]
) -> None:
    queue, retried = unique_name("future"), unique_name("retried")
    settings = {queue: {"concurrency": 4}, retried: {"concurrency": 2, "backoff": 0.4, "max_retries": 3}}
    workers(pg_effects, settings)
    # The second worker's own sessions run far west of UTC.
    west = pg_effects + "?options=" + quote("-c TimeZone=America/Los_Angeles")
    workers(west, settings)
    base = datetime.now(timezone.utc) + timedelta(seconds=1)
    ids = []
    for n, zone in enumerate(["America/Los_Angeles", "Pacific/Kiritimati", "UTC", "Asia/Kolkata"]):
        conn = pg_connect(autocommit=True)
        conn.execute("SELECT set_config('TimeZone', %s, false)", [zone])
        for k in range(3):
            when = base + timedelta(milliseconds=150 * (3 * n + k))
            job = Job(queue=queue, payload={"zone": zone, "k": k}, run_after=when)
            ids.append(client.enqueue(job, connection=conn))
    for k in range(4):
        client.enqueue(Job(queue=retried, payload={"mode": "fail_once", "k": k}))

    def done() -> bool:
        stats = client.stats()
        return stats.get(queue, {}).get("processed") == len(ids) and stats.get(retried, {}).get("processed") == 4

    wait_until(done, 30, "every future job and retry ran")
    rows = effects(pg_effects, queue, retried)
    lateness = [started - run_after for (_, _, _, _, started, run_after) in rows]
    assert len(lateness) == len(ids) + 4
    assert all(row[3] == 2 for row in rows if row[1] == retried), "the failed first attempts' writes were kept"
    print(
        f"\nfuture jobs and retries: lateness min {min(lateness) * 1000:.1f}ms, "
        f"median {statistics.median(lateness) * 1000:.1f}ms, max {max(lateness) * 1000:.1f}ms"
    )
    assert min(lateness) >= 0, "a job started before its run_after"
    assert max(lateness) < 0.100
