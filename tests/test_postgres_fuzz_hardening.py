"""The hardening properties (tests/fuzz_hardening.py) on PostgreSQL, transaction and lease mode."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_hardening import backoffs, check_job_fields, check_outcomes, job_fields, outcomes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgfixtures import unique_name

import neoq

pytestmark = pytest.mark.postgres

_queues = itertools.count()


@pytest.fixture
def pg_client(pg_url: str) -> Iterator[neoq.Neoq]:
    with neoq.new(pg_url, application_name=unique_name("neoq-fuzz-hard"), shutdown_timeout=2) as nq:
        yield nq


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(fields=job_fields)
def test_job_fields_are_stored_exactly_or_refused_on_postgres(pg_client: neoq.Neoq, fields: dict[str, Any]) -> None:
    check_job_fields(pg_client, fields)


@pytest.mark.parametrize("mode", ["transaction", "lease"])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=st.lists(outcomes, min_size=1, max_size=3), backoff=backoffs)
def test_handler_outcomes_never_kill_a_loop_on_postgres(
    pg_url: str, mode: str, plan: list[tuple[str, Any]], backoff: Any
) -> None:
    with neoq.new(pg_url, application_name=unique_name("neoq-fuzz-hard"), shutdown_timeout=2) as nq:
        check_outcomes(nq, f"outcomes-{mode}-{next(_queues)}", plan, backoff, mode=mode)
