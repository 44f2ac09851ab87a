"""Property-based checks of enqueue: bad input raises InvalidJobError and stores nothing; good input
round-trips exactly. Runs on memory here; tests/test_postgres_fuzz.py runs the same properties on PostgreSQL."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neoq
from neoq import InvalidJobError, Job, Neoq

# JSON values as Python has them, plus what strict JSON refuses (NaN, infinities, NUL, non-string keys).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(0, 5)), children, max_size=4),
    ),
    max_leaves=25,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
queue_names = st.text(max_size=140)
zones = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))])
moments = st.one_of(
    st.none(),
    st.builds(
        lambda dt, tz: dt.replace(tzinfo=tz),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
        zones,
    ),
)


def strict_json_ok(value: Any, depth: int = 1) -> bool:
    """What neoq must accept: strict JSON with string keys and no NUL, nested at most 200 deep."""
    if isinstance(value, (list, dict)) and depth > 200:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, list):
        return all(strict_json_ok(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and "\x00" not in k and strict_json_ok(v, depth + 1) for k, v in value.items())
    return True


def queue_ok(queue: str) -> bool:
    return bool(queue.strip()) and len(queue) <= 128 and "\x00" not in queue


def check_enqueue(nq: Neoq, queue: str, payload: dict[str, Any], run_after: datetime | None) -> None:
    before = nq.stats()
    valid = queue_ok(queue) and strict_json_ok(payload) and (run_after is None or run_after.tzinfo is not None)
    job = Job(queue=queue, payload=payload, run_after=run_after, fingerprint=None)
    try:
        job_id = nq.enqueue(job)
    except InvalidJobError:
        assert not valid, f"refused a valid job: {job!r}"
        assert nq.stats() == before
        return
    except neoq.DuplicateJobError:
        assert valid
        return
    assert valid, f"accepted an invalid job: {job!r}"
    stored = nq.get_job(job_id)
    assert stored is not None
    assert stored.queue == queue
    assert stored.payload == payload
    assert _same_types(stored.payload, payload)
    if run_after is not None:
        assert stored.run_after == run_after


def _same_types(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) or (isinstance(a, (int, float)) and a == b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=queue_names, payload=payloads, run_after=moments)
def test_enqueue_validates_or_round_trips_on_memory(queue: str, payload: dict[str, Any], run_after: datetime) -> None:
    with neoq.new() as nq:
        check_enqueue(nq, queue, payload, run_after)


@settings(max_examples=100, deadline=None)
@given(payload=payloads)
def test_fingerprint_ignores_key_order(payload: dict[str, Any]) -> None:
    if not strict_json_ok(payload):
        return
    reordered = dict(reversed(list(payload.items())))
    assert neoq.job.fingerprint("q", payload) == neoq.job.fingerprint("q", reordered)


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    node = payload
    for _ in range(depth - 1):
        node["d"] = {}
        node = node["d"]
    return payload


def test_depth_limit_and_large_payloads_on_memory() -> None:
    with neoq.new() as nq:
        check_enqueue(nq, "deep", nested(200), None)
        check_enqueue(nq, "deep", nested(201), None)
        check_enqueue(nq, "big", {"blob": "ü" * (1 << 20), "n": 2**70, "f": 1e-300}, None)
        assert nq.stats()["deep"]["new"] == 1
