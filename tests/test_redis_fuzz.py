"""The enqueue and hardening properties (tests/test_fuzz.py, tests/fuzz_hardening.py) on Redis: bad
input stores nothing, good input round-trips exactly through the scripts (JSON both ways), and no
handler outcome kills a claim loop."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fuzz_hardening import backoffs, check_job_fields, check_outcomes, job_fields, outcomes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import check_enqueue, moments, nested, payloads, queue_names

import neoq

pytestmark = pytest.mark.redis

_queues = itertools.count()

_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[neoq.Neoq]:
    with neoq.new(redis_url, check_config=False, shutdown_timeout=2) as nq:
        yield nq


@settings(max_examples=150, **_SETTINGS)  # type: ignore[arg-type]
@given(queue=queue_names, payload=payloads, run_after=moments)
def test_enqueue_validates_or_round_trips_on_redis(
    redis_client: neoq.Neoq, queue: str, payload: dict[str, Any], run_after: datetime
) -> None:
    check_enqueue(redis_client, queue, payload, run_after)


def test_depth_limit_and_large_payloads_on_redis(redis_client: neoq.Neoq) -> None:
    check_enqueue(redis_client, "fuzz-deep", nested(200), None)
    check_enqueue(redis_client, "fuzz-deep", nested(201), None)
    check_enqueue(redis_client, "fuzz-big", {"blob": "ü" * (1 << 20), "n": 2**70, "f": 1e-300}, None)
    assert redis_client.stats()["fuzz-deep"]["new"] == 1


@settings(max_examples=150, **_SETTINGS)  # type: ignore[arg-type]
@given(fields=job_fields)
def test_job_fields_are_stored_exactly_or_refused_on_redis(redis_client: neoq.Neoq, fields: dict[str, Any]) -> None:
    check_job_fields(redis_client, fields)


@settings(max_examples=12, **_SETTINGS)  # type: ignore[arg-type]
@given(plan=st.lists(outcomes, min_size=1, max_size=3), backoff=backoffs)
def test_handler_outcomes_never_kill_a_loop_on_redis(redis_url: str, plan: list[tuple[str, Any]], backoff: Any) -> None:
    with neoq.new(redis_url, check_config=False, shutdown_timeout=2) as nq:
        check_outcomes(nq, f"outcomes-{next(_queues)}", plan, backoff)
