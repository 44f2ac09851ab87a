"""The shared-store suite (neoq.testing.SharedStoreSuite) on one SQLite file: worker processes of this
host, a SIGKILLed worker's job run again once its lease (1 s here) ran out, cron ticks once across
three processes, cancel across processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from neoq.testing import SharedStoreSuite


class TestSharedSqlite(SharedStoreSuite):
    #: Read from the backend: "shared" and "notify" (the data_version watcher).
    capabilities = None
    #: Another process's job is seen by the watcher (10 ms) and leased in one short transaction.
    pickup_median_limit = 0.1
    #: A killed worker's lease (1 s) runs out, then a look finds the job (the next due time is known).
    rerun_limit = 5.0

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'jobs.db'}"

    def client_options(self) -> dict[str, Any]:
        return {"lease": 1.0}
