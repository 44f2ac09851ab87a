"""The reference backend of the docs (docs/examples/reference_backend.py) passes both conformance suites.

``BackendSuite`` drives it through one client; ``SharedStoreSuite`` runs worker processes on one SQLite
file, reaching the backend by its URL (``refsqlite://PATH``). A process finds a backend by URL through the
``neoq.backends`` entry points, so the tests register the scheme the way an installed package would: a
``.dist-info`` directory holding ``entry_points.txt``, on ``sys.path`` here and on ``PYTHONPATH`` for the
children (no pip install: nothing is left in the virtualenv).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends import Outcome, registry
from neoq.testing import BackendSuite, SharedStoreSuite, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))

from reference_backend import ReferenceBackend  # noqa: E402 - docs/examples is not a package

#: The entry point an installed package of the reference backend would declare.
ENTRY_POINTS = "[neoq.backends]\nrefsqlite = reference_backend:ReferenceBackend\n"


@pytest.fixture(scope="module", autouse=True)
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``refsqlite://`` registered in this process and in the worker processes it starts."""
    site = tmp_path_factory.mktemp("site")
    info = site / "neoq_reference_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: neoq-reference-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        path = os.pathsep.join(filter(None, [str(site), str(EXAMPLES), os.environ.get("PYTHONPATH")]))
        patch.setenv("PYTHONPATH", path)
        yield
    registry._entry_points(refresh=True)  # forget refsqlite:// again: its .dist-info left sys.path


class TestReferenceBackend(BackendSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> ReferenceBackend:
        return ReferenceBackend(str(tmp_path / "jobs.db"))


class TestReferenceBackendShared(SharedStoreSuite):
    """Several processes on one file. Its lease (2 s here) is renewed by nothing: the suite's jobs are shorter."""

    capabilities = frozenset({"shared"})
    #: A SIGKILLed worker's job is claimable again once its lease runs out (2 s), then found by a poll.
    rerun_limit = 10.0

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"refsqlite://{tmp_path / 'jobs.db'}"

    def client_options(self) -> dict[str, Any]:
        return {"lease": 2.0}


def test_found_by_url_and_declares_only_shared(tmp_path: Path) -> None:
    with neoq.new(f"refsqlite://{tmp_path / 'jobs.db'}", poll_interval=0.02) as nq:
        assert type(nq.backend).__name__ == "ReferenceBackend"
        assert nq.backend.capabilities == {"shared"} and nq.backend.poll_interval == 0.02


def test_a_lease_that_ran_out_makes_the_job_claimable_again_with_its_attempt_counted(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    first, second = ReferenceBackend(path, lease=0.2), ReferenceBackend(path, lease=0.2)
    first.open()
    second.open()
    try:
        (job_id,) = first.enqueue([Job(queue="q", payload={}, fingerprint="f")])
        lost = first.look("q").claim
        assert lost is not None and lost.job.attempts == 1
        assert second.look("q").claim is None
        assert second.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        again = wait_for(lambda: second.look("q").claim, 5)
        assert again.job.id == job_id and again.job.attempts == 2
        # The first holder's late settle is fenced off: the row belongs to the second claim.
        first.settle(lost, Outcome(JobStatus.PROCESSED))
        assert second.get_job(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        second.settle(again, Outcome(JobStatus.PROCESSED))
        assert second.get_job(job_id).status is JobStatus.PROCESSED  # type: ignore[union-attr]
    finally:
        first.close()
        second.close()


def test_the_reference_backend_stays_small() -> None:
    """Issue #16: a reference backend under 200 lines shows the contract; docs/backends.md says so."""
    lines = (EXAMPLES / "reference_backend.py").read_text().splitlines()
    assert len(lines) < 200, f"{len(lines)} lines"


def test_a_cancel_of_a_job_whose_holder_died_reaches_its_next_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    dead = ReferenceBackend(path, lease=1.0)
    dead.open()
    (job_id,) = dead.enqueue([Job(queue="c", payload={}, fingerprint="f")])
    assert dead.look("c").claim is not None
    dead.close()  # no settle: as if its process died while the lease runs
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempts)
        context = neoq.job_context()
        assert context is not None and context.cancelled.wait(5)

    with neoq.new(backend=ReferenceBackend(path, lease=5.0)) as nq:
        nq.cancel_job(job_id)  # the holder is gone and its lease not out: the row is marked
        nq.start("c", Handler(handler, concurrency=1))
        wait_for(lambda: nq.get_job(job_id).status is JobStatus.CANCELLED, 10)  # type: ignore[union-attr]
    assert attempts == [2], "the next holder took it with the attempt counted, and the cancel reached it"
