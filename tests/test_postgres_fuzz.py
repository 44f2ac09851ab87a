"""The enqueue properties of tests/test_fuzz.py on PostgreSQL: bad input stores nothing, good input
round-trips exactly (queue names, any JSON, datetimes in any zone)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pgfixtures import unique_name
from test_fuzz import check_enqueue, moments, nested, payloads, queue_names

import neoq

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_client(pg_url: str) -> Iterator[neoq.Neoq]:
    with neoq.new(pg_url, application_name=unique_name("neoq-fuzz")) as nq:
        yield nq


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(queue=queue_names, payload=payloads, run_after=moments)
def test_enqueue_validates_or_round_trips_on_postgres(
    pg_client: neoq.Neoq, queue: str, payload: dict[str, Any], run_after: datetime
) -> None:
    check_enqueue(pg_client, queue, payload, run_after)


def test_depth_limit_and_large_payloads_on_postgres(pg_client: neoq.Neoq) -> None:
    check_enqueue(pg_client, "fuzz-deep", nested(200), None)
    check_enqueue(pg_client, "fuzz-deep", nested(201), None)
    check_enqueue(pg_client, "fuzz-big", {"blob": "ü" * (1 << 20), "n": 2**70, "f": 1e-300}, None)
    assert pg_client.stats()["fuzz-deep"]["new"] == 1
