"""Part of ``BackendSuite``: flow control (docs/flow-control.md), each test gated on its capability.

Priorities, pausing queues, snoozing, uniqueness for a period, global concurrency limits and rate
limits, seen through one client. What must hold across processes is checked by the shared-store
tests (``neoq.testing.flowshared``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ..app import Neoq
from ..backends.capabilities import PRIORITY
from ..errors import InvalidJobError
from ..job import Job
from .base import SuiteBase
from .helpers import utc_now


class FlowTests(SuiteBase):
    """Flow control: what a backend with each flow-control capability must do."""

    def require(self, nq: Neoq, capability: str) -> None:
        """Skip the test unless the backend declares ``capability``."""
        if capability not in nq.backend.capabilities:
            pytest.skip(f"{type(nq.backend).__name__} does not declare {capability!r}")

    # -- priorities ----------------------------------------------------------------------

    @pytest.mark.parametrize("priority", [101, -101, 1.5, True, "1", None])
    def test_priority_out_of_range_is_refused_before_storing(self, nq: Neoq, priority: object) -> None:
        with pytest.raises(InvalidJobError, match="priority"):
            nq.enqueue(Job(queue="prio_bad", payload={}, priority=priority))  # type: ignore[arg-type]
        with pytest.raises(InvalidJobError, match="job 1: priority"):
            nq.enqueue_many([Job(queue="prio_bad", payload={"n": 0}), Job(queue="prio_bad", priority=priority)])  # type: ignore[arg-type]
        assert nq.list_jobs(queue="prio_bad") == []

    def test_priority_is_stored_and_shown(self, nq: Neoq) -> None:
        self.require(nq, PRIORITY)
        ids = [nq.enqueue(Job(queue="prio_show", payload={"p": p}, priority=p)) for p in (-100, 0, 7, 100)]
        assert [job.priority for job in map(nq.get_job, ids) if job is not None] == [-100, 0, 7, 100]
        assert sorted(job.priority for job in nq.list_jobs(queue="prio_show")) == [-100, 0, 7, 100]

    def test_priority_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if PRIORITY in nq.backend.capabilities:
            pytest.skip("the backend declares 'priority'")
        with pytest.raises(InvalidJobError, match="'priority' capability"):
            nq.enqueue(Job(queue="prio_none", payload={}, priority=1))
        assert nq.list_jobs(queue="prio_none") == []
        nq.enqueue(Job(queue="prio_none", payload={}, priority=0))  # the default is always fine

    @pytest.mark.parametrize("batch", [1, 80], ids=["single", "batch"])
    def test_claim_order_is_priority_then_run_after_then_enqueue_order(self, nq: Neoq, batch: int) -> None:
        self.require(nq, PRIORITY)
        past = utc_now() - timedelta(hours=1)
        jobs = []
        for n in range(80):
            priority = (0, 5, -3, 100, -100, 5, 0, 1)[n % 8]
            run_after = past + timedelta(seconds=n % 5) if n % 3 == 0 else None
            jobs.append(Job(queue="prio_order", payload={"n": n}, priority=priority, run_after=run_after))
        ids = []
        for start in range(0, len(jobs), batch):
            ids.extend(nq.enqueue_many(jobs[start : start + batch]))
        stored = {job_id: nq.get_job(job_id) for job_id in ids}
        ran: list[str] = []
        nq.handler("prio_order", concurrency=1)(lambda job: ran.append(job.id or ""))
        nq.drain(timeout=60)
        assert sorted(ran) == sorted(ids)

        def key(job_id: str) -> tuple[int, object, int]:
            job = stored[job_id]
            assert job is not None and job.run_after is not None
            return (-job.priority, job.run_after, ids.index(job_id))

        assert ran == sorted(ids, key=key)
