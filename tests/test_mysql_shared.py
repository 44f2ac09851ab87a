"""The shared-store suite (neoq.testing.SharedStoreSuite) on MariaDB/MySQL, in both handler modes.

Worker processes are ``python -m neoq.testing.worker`` children on the test database (the
``mysql_clean`` fixture of tests/myfixtures.py: never skipped under CI=true).
"""

from __future__ import annotations

from typing import Any

import pytest
from myfixtures import connect

from neoq.testing import SharedStoreSuite

pytestmark = pytest.mark.mysql


class TestSharedMySQLLease(SharedStoreSuite):
    """Lease mode (the default) with a 1 s lease: no transaction is held while handlers run."""

    capabilities = None
    #: Other processes' jobs are found by a poll (50 ms): no LISTEN/NOTIFY in MySQL.
    pickup_median_limit = 0.15
    #: A killed worker's job is due again once its lease (1 s) expires, then found by a poll.
    rerun_limit = 5.0
    #: Lease mode leases ahead: each process may hold, unstarted, a fetch for its claim loops plus
    #: up to three prefetches (concurrency 4) of lower priorities than a later fetch finds (as on PostgreSQL).
    priority_slack = 2 * (4 + 3 * 4) + 4

    @pytest.fixture
    def store_url(self, mysql_clean: str) -> str:
        return mysql_clean

    def client_options(self) -> dict[str, Any]:
        return {"lease": 1.0}

    def connect(self, url: str) -> Any:
        return connect(url)


class TestSharedMySQLTransaction(TestSharedMySQLLease):
    """Transaction mode: each attempt holds its job's row lock; a killed worker's session ends at once."""

    #: A transaction-mode claim takes one job at a time: the suite's own slack.
    priority_slack = 8

    def client_options(self) -> dict[str, Any]:
        return {"mode": "transaction"}
