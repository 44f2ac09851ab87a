"""Fault 5, bad input, fuzzed on both backends (extends tests/test_fuzz.py and test_postgres_fuzz.py):
dates over the whole datetime range in odd zones (run_after and deadline), fingerprints and
max_retries around their limits, huge and extreme numbers, large strings, deep nesting, unicode
queue names (lone surrogates included). Each job either raises InvalidJobError with nothing stored
or round-trips exactly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgfixtures import unique_name
from test_fuzz import _same_types, nested, strict_json_ok

import neoq
from neoq import InvalidJobError, Job

# Text including what UTF-8 cannot encode (lone surrogates), combining marks, RTL and emoji.
wild_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
queue_names = st.one_of(
    wild_text,
    st.sampled_from(["émoji-🙂", "עברית", "\u202eevil", "e\u0301", "ᚠᛇᚻ", "q" * 128, "q" * 129, " ", "\ud800x"]),
)
huge_numbers = st.one_of(
    st.integers(min_value=-(2**4000), max_value=2**4000),
    st.sampled_from([4299, 4300]).map(lambda digits: 10**digits),  # about the limit of int -> str
    st.sampled_from([2**63, -(2**63) - 1, 5e-324, -0.0, 1.7976931348623157e308, 1e16]),
    st.floats(),
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), huge_numbers, wild_text),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(wild_text, children, max_size=4)),
    max_leaves=20,
)
payloads = st.dictionaries(wild_text, values, max_size=4)
# Any offset a tzinfo may have (to the microsecond), over the whole datetime range.
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
moments = st.one_of(
    st.none(),
    st.builds(lambda dt, off: dt.replace(tzinfo=timezone(off)), st.datetimes(), offsets),
    st.datetimes(),  # naive: refused
)

# Fingerprints of every length around the limit (256 characters), with the payload's wild text.
fingerprints = st.one_of(
    st.none(),
    wild_text,
    st.builds(lambda text, n: (text or "f") * n, wild_text, st.integers(1, 300)).map(lambda fp: fp[:300]),
)
retry_limits = st.one_of(
    st.none(), st.integers(-2, 2**40), st.sampled_from([0, 1_000_000, 1_000_001, 2**31 - 1, 2**31, True])
)


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected_valid(job: Job) -> bool:
    def text_ok(value: Any) -> bool:
        if isinstance(value, str):
            return encodable(value)
        if isinstance(value, list):
            return all(text_ok(v) for v in value)
        if isinstance(value, dict):
            return all(text_ok(k) and text_ok(v) for k, v in value.items())
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                str(value)  # Python refuses to print ints past sys.get_int_max_str_digits()
            except ValueError:
                return False
        return True

    def moment_ok(value: datetime | None) -> bool:
        if value is None:
            return True
        if value.tzinfo is None:
            return False
        try:
            utc = value.astimezone(timezone.utc)
        except OverflowError:
            return False  # beyond year 1..9999 once in UTC
        # API.md, limits on input.
        return datetime(1970, 1, 1, tzinfo=timezone.utc) <= utc <= datetime(9000, 1, 1, tzinfo=timezone.utc)

    queue = job.queue
    return (
        bool(queue.strip())
        and len(queue) <= 128
        and "\x00" not in queue
        and encodable(queue)
        and strict_json_ok(job.payload)
        and text_ok(job.payload)
        and moment_ok(job.run_after)
        and moment_ok(job.deadline)
        and (job.fingerprint is None or (0 < len(job.fingerprint) <= 256 and text_ok(job.fingerprint)))
        and (job.max_retries is None or (type(job.max_retries) is int and 0 <= job.max_retries <= 1_000_000))
    )


def check(nq: neoq.Neoq, job: Job) -> None:
    valid = expected_valid(job)
    before = nq.stats()
    try:
        job_id = nq.enqueue(job)
    except InvalidJobError:
        assert not valid, f"refused a valid job on queue {job.queue!r}"
        assert nq.stats() == before, "a refused job was stored"
        return
    except neoq.DuplicateJobError:
        assert valid
        return
    assert valid, f"accepted an invalid job on queue {job.queue!r}"
    stored = nq.get_job(job_id)
    assert stored is not None
    assert stored.queue == job.queue
    assert stored.payload == job.payload and _same_types(stored.payload, job.payload)
    for name in ("run_after", "deadline"):
        given_at = getattr(job, name)
        if given_at is not None:
            assert getattr(stored, name) == given_at, name
    assert stored.max_retries == job.max_retries
    if job.fingerprint is not None:
        assert stored.fingerprint == job.fingerprint


jobs = st.builds(
    lambda queue, payload, run_after, deadline, fingerprint, max_retries: Job(
        queue=queue,
        payload=payload,
        run_after=run_after,
        deadline=deadline,
        fingerprint=fingerprint,
        max_retries=max_retries,
    ),
    queue_names,
    payloads,
    moments,
    moments,
    fingerprints,
    retry_limits,
)


@pytest.fixture
def memory_client() -> Iterator[neoq.Neoq]:
    with neoq.new() as nq:
        yield nq


@pytest.fixture
def pg_client(pg_url: str) -> Iterator[neoq.Neoq]:
    with neoq.new(pg_url, application_name=unique_name("neoq-chaos-fuzz")) as nq:
        yield nq


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(job=jobs)
def test_wild_input_is_refused_or_round_trips_on_memory(memory_client: neoq.Neoq, job: Job) -> None:
    check(memory_client, job)


@pytest.mark.postgres
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(job=jobs)
def test_wild_input_is_refused_or_round_trips_on_postgres(pg_client: neoq.Neoq, job: Job) -> None:
    check(pg_client, job)


EDGES = [
    Job(queue="q\ud800", payload={}),
    Job(queue="q", payload={"a": "\udc00"}),
    Job(queue="q", payload={"\ud83d": 1}),
    Job(queue="q", payload={"n": 10**5000}),
    Job(queue="q", payload={"tiny": 5e-324, "neg0": -0.0, "max": 1.7976931348623157e308, "big": 2**64}),
    Job(queue="q", payload={}, run_after=datetime(1, 1, 1, tzinfo=timezone.utc)),
    Job(
        queue="q",
        payload={"z": 1},
        run_after=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=14))),
    ),
    Job(queue="q", payload={"z": 2}, run_after=datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=14)))),
    Job(
        queue="q",
        payload={"z": 3},
        deadline=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))),
    ),
    Job(
        queue="q",
        payload={"z": 4},
        run_after=datetime(2020, 1, 1, tzinfo=timezone(timedelta(seconds=3723, microseconds=5))),
    ),
    Job(queue="\u202e\u0301🙂 ᚠ", payload={"z": 5}),
    Job(queue="q", payload={"deep": nested(200)}),
    Job(queue="q", payload={"blob": "🙂" * (1 << 20)}),
]


@pytest.mark.parametrize("backend", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("job", EDGES, ids=[f"edge{i}" for i in range(len(EDGES))])
def test_edge_cases_are_refused_or_round_trip(backend: str, job: Job, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue("memory_client" if backend == "memory" else "pg_client")
    check(client, job)
