"""The behaviour suite (neoq.testing.BackendSuite) on the SQLite backend, one file per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from neoq.backends.sqlite import SqliteBackend
from neoq.testing import BackendSuite


class TestSqliteSuite(BackendSuite):
    """Every behaviour the memory backend shows, on a SQLite file (leases of 2 s)."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> SqliteBackend:
        return SqliteBackend(str(tmp_path / "jobs.db"), lease=2)
