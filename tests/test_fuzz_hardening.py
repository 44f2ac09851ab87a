"""The hardening properties (tests/fuzz_hardening.py) on the memory backend."""

from __future__ import annotations

import itertools
from typing import Any

from fuzz_hardening import backoffs, check_job_fields, check_outcomes, check_url, job_fields, outcomes, secret_urls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neoq

_queues = itertools.count()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=job_fields)
def test_job_fields_are_stored_exactly_or_refused_on_memory(fields: dict[str, Any]) -> None:
    with neoq.new("memory://") as nq:
        check_job_fields(nq, fields)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(outcomes, min_size=1, max_size=3), backoff=backoffs)
def test_handler_outcomes_never_kill_a_loop_on_memory(plan: list[tuple[str, Any]], backoff: Any) -> None:
    with neoq.new("memory://", shutdown_timeout=2) as nq:
        check_outcomes(nq, f"outcomes-{next(_queues)}", plan, backoff)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=secret_urls())
def test_no_secret_from_a_url_in_any_output(url: str) -> None:
    check_url(url)
