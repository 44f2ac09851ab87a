"""The shared suite's own machinery, without a server: capability gating and its portable SQL."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

import neoq
from neoq.backends import MemoryBackend
from neoq.testing import SharedStoreSuite
from neoq.testing.shared import _execute


class _Offering(MemoryBackend):
    """A memory backend that claims more than memory offers, to drive the suite's gate."""

    capabilities = frozenset({"shared", "notify"})


def _suite(declared: frozenset[str] | None) -> SharedStoreSuite:
    return type("Suite", (SharedStoreSuite,), {"capabilities": declared})()


def test_a_declared_capability_runs_and_a_missing_one_skips() -> None:
    with neoq.new(backend=_Offering()) as nq:
        suite = _suite(frozenset({"shared"}))
        suite.require(nq, "shared")
        with pytest.raises(pytest.skip.Exception, match="does not offer 'transaction'"):
            suite.require(nq, "transaction")


def test_the_backend_capabilities_are_read_when_the_suite_declares_none() -> None:
    with neoq.new(backend=_Offering()) as nq:
        _suite(None).require(nq, "notify")
        with pytest.raises(pytest.skip.Exception):
            _suite(None).require(nq, "enqueue_in_transaction")
    with neoq.new(backend=MemoryBackend()) as nq, pytest.raises(pytest.skip.Exception, match="'shared'"):
        _suite(None).require(nq, "shared")


def test_a_suite_may_narrow_the_capabilities_but_not_claim_more() -> None:
    with neoq.new(backend=_Offering()) as nq:
        narrowed = _suite(frozenset({"shared"}))
        with pytest.raises(pytest.skip.Exception):
            narrowed.require(nq, "notify")
        with pytest.raises(AssertionError, match="transaction"):
            _suite(frozenset({"shared", "transaction"})).require(nq, "shared")


def test_writes_use_the_drivers_parameter_style() -> None:
    connection: Any = sqlite3.connect(":memory:")  # qmark, where psycopg is pyformat
    try:
        _execute(connection, "CREATE TABLE IF NOT EXISTS writes (tag VARCHAR(200) NOT NULL)")
        for tag in ("a:1", "a:'2'; DROP TABLE writes; --", "b:1"):
            _execute(connection, "INSERT INTO writes (tag) VALUES ({})", tag)
        rows = _execute(connection, "SELECT tag FROM writes WHERE tag LIKE {}", "a:%")
    finally:
        connection.close()
    assert sorted(row[0] for row in rows) == ["a:'2'; DROP TABLE writes; --", "a:1"]
