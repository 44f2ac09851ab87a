"""What every part of the behaviour suite builds on: the ``backend`` and ``nq`` fixtures, and waiting for a status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..app import Neoq, new
from ..backends.base import Backend
from ..job import Job, JobStatus
from .helpers import PATIENCE, wait_for

__all__ = ["SuiteBase"]


class SuiteBase:
    """The fixtures and helpers of ``BackendSuite``; each part of the suite is a subclass of it."""

    @pytest.fixture
    def backend(self) -> Backend:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("subclass BackendSuite and define a `backend` fixture")

    @pytest.fixture
    def nq(self, backend: Backend) -> Iterator[Neoq]:
        client = new(backend=backend, shutdown_timeout=5)
        try:
            yield client
        finally:
            client.shutdown(timeout=5)

    def status_of(self, nq: Neoq, job_id: str) -> JobStatus | None:
        job = nq.get_job(job_id)
        return None if job is None else job.status

    def wait_status(self, nq: Neoq, job_id: str, status: JobStatus, timeout: float = PATIENCE) -> Job:
        def reached() -> Job | None:
            job = nq.get_job(job_id)
            return job if job is not None and job.status is status else None

        reached.__name__ = f"job {job_id} is {status.value}"
        result: Job = wait_for(reached, timeout)
        return result

    def assert_serves_next(self, nq: Neoq, queue: str) -> None:
        """The queue's claim loop (concurrency 1 in these tests) still runs jobs: ``{"ok": 1}`` is processed."""
        self.wait_status(nq, nq.enqueue(Job(queue=queue, payload={"ok": 1})), JobStatus.PROCESSED)
