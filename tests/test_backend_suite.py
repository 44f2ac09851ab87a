"""The behaviour suite on the in-memory backend, the reference implementation."""

from __future__ import annotations

import pytest

from neoq.backends import MemoryBackend
from neoq.testing import BackendSuite


class TestMemorySuite(BackendSuite):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()
