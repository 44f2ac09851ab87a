"""The behaviour suite (neoq.testing.BackendSuite) on MariaDB/MySQL, in both modes (issue 22, point 1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from myfixtures import open_sessions

from neoq.backends.mysql import MySQLBackend
from neoq.testing import BackendSuite, wait_for

pytestmark = pytest.mark.mysql


class TestMySQLLeaseSuite(BackendSuite):
    """Lease mode, the default: nothing held while handlers run."""

    @pytest.fixture
    def backend(self, mysql_clean: str) -> Iterator[MySQLBackend]:
        backend = MySQLBackend(mysql_clean, lease=2)
        yield backend
        backend.close()
        # Every connection the backend opened is closed once it is (abandoned handlers aside).
        wait_for(lambda: open_sessions(mysql_clean) == 0, 5)


class TestMySQLTransactionSuite(BackendSuite):
    """Transaction mode: each attempt holds its job's row lock in a transaction."""

    @pytest.fixture
    def backend(self, mysql_clean: str) -> Iterator[MySQLBackend]:
        backend = MySQLBackend(mysql_clean, mode="transaction")
        yield backend
        backend.close()
        wait_for(lambda: open_sessions(mysql_clean) == 0, 5)
