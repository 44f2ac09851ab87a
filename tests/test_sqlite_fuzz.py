"""The hardening properties (tests/fuzz_hardening.py) on the SQLite backend: every job field stored exactly
(datetimes to the microsecond from 1970 to 9000, any JSON payload, long fingerprints) or refused with nothing
stored, and no handler outcome kills a claim loop."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzz_hardening import backoffs, check_job_fields, check_outcomes, job_fields, outcomes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neoq

_queues = itertools.count()


@pytest.fixture(scope="module")
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="neoq-w-sqlite-fuzz-") as folder:
        yield f"sqlite:///{Path(folder) / 'jobs.db'}"


@pytest.fixture(scope="module")
def client(sqlite_url: str) -> Iterator[neoq.Neoq]:
    with neoq.new(sqlite_url) as nq:
        yield nq


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(fields=job_fields)
def test_job_fields_are_stored_exactly_or_refused_on_sqlite(client: neoq.Neoq, fields: dict[str, Any]) -> None:
    check_job_fields(client, fields)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(outcomes, min_size=1, max_size=3), backoff=backoffs)
def test_handler_outcomes_never_kill_a_loop_on_sqlite(
    sqlite_url: str, plan: list[tuple[str, Any]], backoff: Any
) -> None:
    with neoq.new(sqlite_url, shutdown_timeout=2) as nq:
        check_outcomes(nq, f"outcomes-{next(_queues)}", plan, backoff)
