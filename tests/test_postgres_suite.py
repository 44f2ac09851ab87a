"""The backend behaviour suite (neoq.testing.BackendSuite) on PostgreSQL: acceptance point 1."""

from __future__ import annotations

import pytest
from pgfixtures import unique_name

from neoq.backends.postgres import PostgresBackend
from neoq.testing import BackendSuite

pytestmark = pytest.mark.postgres


class TestPostgresSuite(BackendSuite):
    """Every behaviour the memory backend shows, on a real server."""

    @pytest.fixture
    def backend(self, pg_clean: str) -> PostgresBackend:
        return PostgresBackend(pg_clean, application_name=unique_name("neoq-suite"))
