"""Part of ``SharedStoreSuite``: flow control across worker processes (docs/flow-control.md).

What one client cannot show: a global limit holds across four processes and a SIGKILLed holder's
slot is freed; a rate limit holds across three; a backlog of mixed priorities starts in priority
order in a worker process. Each test is gated on its capability (and on ``"shared"``).
"""

from __future__ import annotations

import signal
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..backends.capabilities import GLOBAL_LIMIT, PRIORITY, RATE_LIMIT, SHARED
from ..job import Job, JobStatus

if TYPE_CHECKING:
    from ..app import Neoq
    from .processes import WorkerPool

__all__ = ["FlowSharedTests"]

#: How long the flow tests wait for work that takes the worker processes seconds.
PATIENCE = 60.0


def _queue(purpose: str) -> str:
    return f"shared-flow-{purpose}-{uuid.uuid4().hex[:10]}"


def most_at_once(effects: list[dict[str, Any]], since: float = 0.0) -> int:
    """The most effects whose [started, ended] overlap at one moment, among those ending after ``since``."""
    edges = []
    for effect in effects:
        if effect["ended"] > since:
            edges += [(float(effect["started"]), 1), (float(effect["ended"]), -1)]
    running = most = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an end before a start at one instant
        running += step
        most = max(most, running)
    return most


def most_in_a_window(starts: list[float], per: float) -> int:
    """The most of ``starts`` in any window of length ``per`` (sliding)."""
    ordered = sorted(starts)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= per:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_late(priorities: list[int]) -> int:
    """How many places after the first lower priority one the latest of ``priorities`` came (0: in order)."""
    late = 0
    for index, priority in enumerate(priorities):
        first_lower = next((i for i in range(index) if priorities[i] < priority), None)
        if first_lower is not None:
            late = max(late, index - first_lower)
    return late


class FlowSharedTests:
    """Flow control across processes; a part of ``SharedStoreSuite`` (its fixtures and ``require``)."""

    #: How many places later than its priority allows a job may be claimed in a worker at
    #: concurrency 4: claims under way side by side (a store that claims one job at a time).
    priority_slack: int = 8

    if TYPE_CHECKING:

        def require(self, nq: Neoq, capability: str) -> None: ...

        def wait_status(
            self, nq: Neoq, job_id: str, status: JobStatus, timeout: float = ..., pool: WorkerPool | None = None
        ) -> Job: ...

    def test_a_global_limit_holds_across_four_processes(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, SHARED)
        self.require(nq, GLOBAL_LIMIT)
        queue = _queue("limit")
        settings = {queue: {"concurrency": 10, "global_limit": 3}}
        processes = [workers.start(settings, wait=False) for _ in range(4)]
        workers.wait_ready(processes)
        # A holder dies with its slot: the job runs again elsewhere, and three jobs still run at once.
        killed = nq.enqueue(Job(queue=queue, payload={"action": "sigkill-first"}))
        workers.wait(workers.flag(killed, "killed").exists, PATIENCE, "a slot holder killed itself")
        died_at = float(workers.flag(killed, "killed").read_text())
        ids = nq.enqueue_many(
            [Job(queue=queue, payload={"n": n, "action": "sleep", "seconds": 0.1}) for n in range(40)]
        )
        samples = []

        def done() -> bool:
            stats = nq.stats().get(queue, {})
            samples.append(stats.get("running", 0))
            return stats.get("processed") == len(ids) + 1

        workers.wait(done, PATIENCE, "every job processed", 0.02)
        effects = workers.effects()
        dead = [process for process in processes if not process.alive()]
        assert len(dead) == 1 and dead[0].proc.returncode == -signal.SIGKILL, dead[0].output() if dead else ""
        assert max(samples) <= 3, f"{max(samples)} running at once by the store's count"
        assert most_at_once(effects) <= 3, "more than three handlers ran at once"
        assert most_at_once(effects, since=died_at) == 3, "the killed holder's slot was not freed"
        assert {job.attempts for job in map(nq.get_job, ids) if job is not None} == {1}  # none burned
        job = self.wait_status(nq, killed, JobStatus.PROCESSED, pool=workers)
        assert job.attempts == 2
        print(f"\nglobal_limit=3, 4 processes x 10: at most {max(samples)} running (sampled {len(samples)} times)")

    def test_a_rate_limit_holds_across_three_processes(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, SHARED)
        self.require(nq, RATE_LIMIT)
        queue, count, per, total = _queue("rate"), 50, 1.0, 500
        settings = {queue: {"concurrency": 4, "rate_limit": {"count": count, "per": per}}}
        processes = [workers.start(settings, wait=False) for _ in range(3)]
        workers.wait_ready(processes)
        began = time.time()
        nq.enqueue_many([Job(queue=queue, payload={"n": n}) for n in range(total)])
        workers.wait(
            lambda: len(workers.effects()) >= total or time.time() > began + 10.5, PATIENCE, "ten seconds", 0.1
        )
        starts = [float(effect["started"]) for effect in workers.effects()]
        in_ten = sum(1 for started in starts if started < began + 10.0)
        busiest = most_in_a_window(starts, per)
        print(f"\nRateLimit({count}, {per:g}s) over 3 processes: {in_ten} starts in 10s, at most {busiest} in a second")
        assert busiest <= count, f"{busiest} starts in one second"
        assert in_ten >= 0.9 * total, f"only {in_ten} of {total} started within 10s"
        shares = {effect["pid"] for effect in workers.effects()}
        assert len(shares) >= 2, "one process ran every job: the limit was not shared"

    def test_a_backlog_starts_in_priority_order(self, nq: Neoq, workers: WorkerPool) -> None:
        self.require(nq, SHARED)
        self.require(nq, PRIORITY)
        queue, concurrency = _queue("priority"), 4
        priorities = [((n * 37) % 201) - 100 for n in range(1000)]
        ids = nq.enqueue_many([Job(queue=queue, payload={"n": n}, priority=p) for n, p in enumerate(priorities)])
        workers.start({queue: {"concurrency": concurrency}})
        workers.wait(lambda: len(workers.effects()) == len(ids), PATIENCE, "every job started", 0.05)
        # In the order the store saw them claimed (ran_at), which handler threads do not blur.
        jobs = [job for job in nq.list_jobs(queue=queue, limit=len(ids)) if job.ran_at is not None]
        assert len(jobs) == len(ids)
        started = [job.priority for job in sorted(jobs, key=lambda job: (job.ran_at, int(job.id or 0)))]
        late = most_late(started)
        print(f"\n1,000 priorities, concurrency {concurrency}: claimed at most {late} places late")
        assert late <= self.priority_slack, f"a job was claimed {late} places after a lower priority one"
