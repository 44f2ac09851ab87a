"""The shared-store suite (neoq.testing.SharedStoreSuite) on Redis, and a Redis restart in the
middle of a shared-store run.

Worker processes are ``python -m neoq.testing.worker`` children on the test server with a key
prefix of the test's own. The restart test starts its own ``redis-server`` (AOF on, fsync
always) on a free port, SIGKILLs it while three worker processes drain a batch, starts it again
on the same port and data: every job ends PROCESSED and work resumes within 2 s of its return.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redisfixtures import RedisServer, delete_prefix, redis_prefix

import neoq
from neoq import Job
from neoq.testing import SharedStoreSuite
from neoq.testing.processes import WorkerPool

pytestmark = pytest.mark.redis


class TestSharedRedis(SharedStoreSuite):
    """Leases of 1 s: a SIGKILLed worker's job runs again once its lease ends."""

    capabilities = None
    #: Wake-ups come by pub/sub: a few milliseconds (measured 2-4 ms on a busy 2-core machine).
    pickup_median_limit = 0.1
    #: The lease (1 s), then a look (a wake-up or the 1 s poll).
    rerun_limit = 5.0

    @pytest.fixture
    def store_url(self, redis_db_url: str) -> Iterator[str]:
        prefix = redis_prefix("shared")
        yield f"{redis_db_url}?prefix={prefix}"
        delete_prefix(redis_db_url, prefix)

    def client_options(self) -> dict[str, Any]:
        return {"lease": 1.0, "check_config": False}


JOBS = 300
PROCESSES = 3
#: How long the server stays down.
OUTAGE = 2.0


def _processed(client: neoq.Neoq, queue: str) -> int:
    """The queue's processed count, or -1 while the server cannot be reached."""
    try:
        return client.stats().get(queue, {}).get("processed", 0)
    except neoq.BackendConnectionError:
        return -1


def _starts(directory: Path) -> list[tuple[float, str]]:
    """(start time, job id) of every attempt the workers recorded (neoq.testing.worker's effect files)."""
    found = []
    for path in directory.glob("*.json"):
        effect = json.loads(path.read_text())
        found.append((float(effect["started"]), str(effect["job"])))
    return found


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_redis_restart_in_the_middle_of_a_shared_run_loses_nothing_and_work_resumes(
    redis_own_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = redis_own_server(appendonly=True)
    url = f"{server.url}?prefix={redis_prefix('restart')}"
    options = {"lease": 1.0, "check_config": False}
    queue = f"restart-{time.monotonic_ns()}"
    pool = WorkerPool(url, tmp_path, options, {})
    try:
        for _ in range(PROCESSES):
            pool.start({queue: {"concurrency": 2}})
        with neoq.new(url, **options) as client:
            # 300 jobs of 40 ms on 6 slots: about 2 s of work, cut in the middle by the outage.
            batch = [Job(queue=queue, payload={"action": "sleep", "seconds": 0.04, "n": n}) for n in range(JOBS)]
            ids = client.enqueue_many(batch)
            deadline = time.monotonic() + 60
            while _processed(client, queue) < JOBS // 5:
                assert time.monotonic() < deadline, "the workers did not start on the batch"
                time.sleep(0.01)
            server.kill()
            with pytest.raises(neoq.BackendConnectionError):
                client.enqueue(Job(queue=queue, payload={"during": "the outage"}))
            time.sleep(OUTAGE)  # the fault's length: the server stays down this long
            server.start()
            back = time.time()
            late = client.enqueue(Job(queue=queue, payload={"action": "record", "after": "the outage"}))
            deadline = time.monotonic() + 90
            while _processed(client, queue) < JOBS + 1:
                assert time.monotonic() < deadline, f"only {_processed(client, queue)} of {JOBS + 1} jobs processed"
                time.sleep(0.02)
            stats = client.stats()[queue]
            jobs = [client.get_job(job_id) for job_id in [*ids, late]]
        starts = _starts(tmp_path)
        before = sum(1 for started, _ in starts if started < back - OUTAGE)
        resumed = min(started for started, _ in starts if started >= back) - back
        print(f"\n[redis restart] attempts before the kill: {before}, resumed {resumed * 1000:.0f} ms after the return")
        assert stats == {"new": 0, "running": 0, "processed": JOBS + 1, "failed": 0, "cancelled": 0}
        assert all(job is not None and job.status is neoq.JobStatus.PROCESSED for job in jobs)
        assert {job_id for _, job_id in starts} == {*ids, late}, "a job never ran"
        assert 0 < before < JOBS, "the outage did not fall in the middle of the run"
        assert resumed < 2.0, f"work resumed {resumed:.2f}s after the server came back"
    finally:
        pool.close()
