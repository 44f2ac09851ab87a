"""The shared-store suite on memory://, where none of it applies.

Each ``memory://`` client has its own private store (API.md), so there is no second process to
share it with: the memory backend does not claim ``"shared"`` (nor ``"transaction"`` or
``"enqueue_in_transaction"``), and every test of the suite is skipped with that reason. The tests
below pin why.
"""

from __future__ import annotations

import pytest

import neoq
from neoq import Job
from neoq.testing import SharedStoreSuite


class TestSharedMemory(SharedStoreSuite):
    capabilities = None  # read from the backend: no "shared", so every test skips

    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"


def test_memory_does_not_claim_shared() -> None:
    with neoq.new("memory://") as nq:
        assert "shared" not in nq.backend.capabilities


def test_two_memory_clients_share_nothing() -> None:
    with neoq.new("memory://") as first, neoq.new("memory://") as second:
        job_id = first.enqueue(Job(queue="private", payload={}))
        assert first.get_job(job_id) is not None
        assert second.get_job(job_id) is None and second.stats() == {}
