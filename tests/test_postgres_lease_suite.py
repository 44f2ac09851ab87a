"""The behaviour suite (neoq.testing.BackendSuite) on PostgreSQL in lease mode (issue 9, point 6)."""

from __future__ import annotations

import pytest
from pgfixtures import unique_name

from neoq.backends.postgres import PostgresBackend
from neoq.testing import BackendSuite

pytestmark = pytest.mark.postgres


class TestPostgresLeaseSuite(BackendSuite):
    """Every behaviour the memory backend shows, with no transaction held while handlers run."""

    @pytest.fixture
    def backend(self, pg_clean: str) -> PostgresBackend:
        return PostgresBackend(pg_clean, mode="lease", lease=2, application_name=unique_name("neoq-lease-suite"))
