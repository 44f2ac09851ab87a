"""Shared fixtures. PostgreSQL fixtures live in pgfixtures.py (a fresh database per test run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from neoq.testing import neoq_threads, wait_for

pytest_plugins = ["pgfixtures", "myfixtures", "redisfixtures"]


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a neoq thread running (a leak), once its own fixtures are done."""
    yield
    if neoq_threads():
        wait_for(lambda: not neoq_threads(), timeout=5)
