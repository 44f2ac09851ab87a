"""Job validation, fingerprints and JSON rules."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from neoq import InvalidJobError, Job, JobStatus
from neoq.job import canonical_json, error_text, fingerprint, prepare_job, to_seconds

UTC = timezone.utc


def test_job_is_frozen_and_keyword_only() -> None:
    job = Job(queue="q")
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.queue = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Job("q")  # type: ignore[misc]
    assert job.payload == {} and job.status is JobStatus.NEW and job.retries == 0


def test_job_status_is_a_str_enum() -> None:
    assert [s.value for s in JobStatus] == ["new", "running", "processed", "failed", "cancelled"]
    assert JobStatus.FAILED == "failed" and str(JobStatus.NEW) == "new"


def test_fingerprint_is_canonical_and_stable() -> None:
    a = fingerprint("q", {"b": 1, "a": [1, {"y": 2, "x": 1}]})
    b = fingerprint("q", {"a": [1, {"x": 1, "y": 2}], "b": 1})
    assert a == b
    assert a != fingerprint("q2", {"b": 1, "a": [1, {"y": 2, "x": 1}]})
    assert canonical_json({"é": "ü", "b": [1, 2]}) == '{"b":[1,2],"\\u00e9":"\\u00fc"}'
    assert len(a) == 64 and int(a, 16) >= 0


#: Digests stored by earlier versions. They must never change: a job stored before an upgrade
#: would no longer be seen as a duplicate of the same job enqueued after it.
PINNED_FINGERPRINTS = [
    ("emails", {"to": 7}, "b9e9e9408137367e74ef7d94379aa7da1ea39291a6c016dd0e9998d2b8e9ec2d"),
    ("q", {}, "2cceb87dd705ac437a78cb46614b9bee3b2097c481511e3a4e2f8c7bf3e29219"),
    (
        "queue é",
        {"text": "ünïcödé 🎉", "ключ": "значение"},
        "feab00bff7cfc4ee78e3a44550f979d17b9734eaa19118f631b5cd2090d2b840",
    ),
    (
        "q",
        {"b": [1, {"y": None, "x": True}], "a": {"deep": [[], {}, [1.5, -2, 2**62]]}},
        "8975083f34fa0c6188465906a326c40b8c87644fb5e598f01dc57b9642a8a97f",
    ),
    (
        "n",
        {"int": 0, "neg": -1, "float": 0.1, "big": 1e300, "small": 5e-324, "f": False},
        "a1f9d282c078e8db742a5f648b836c6ef29381ccb3fc5f690cbd9a365c1fe915",
    ),
]


@pytest.mark.parametrize(("queue", "payload", "digest"), PINNED_FINGERPRINTS)
def test_fingerprint_is_pinned(queue: str, payload: dict[str, object], digest: str) -> None:
    assert fingerprint(queue, payload) == digest
    # prepare_job takes a shortcut for flat payloads; it must give the same digest.
    assert prepare_job(Job(queue=queue, payload=payload))[0].fingerprint == digest


def test_fingerprint_identical_in_another_process() -> None:
    code = "from neoq.job import fingerprint; print(fingerprint('q', {'n': 1.5, 'u': 'ü', 'l': [None, True]}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == fingerprint("q", {"l": [None, True], "u": "ü", "n": 1.5})


def test_prepare_normalises() -> None:
    paris = timezone(timedelta(hours=1))
    job, text = prepare_job(Job(queue="q", payload={"a": (1, 2)}, run_after=datetime(2030, 1, 1, 13, tzinfo=paris)))
    assert job.payload == {"a": [1, 2]}
    assert text == '{"a":[1,2]}'
    assert job.run_after == datetime(2030, 1, 1, 12, tzinfo=UTC) and job.run_after.tzinfo is UTC
    assert job.fingerprint == fingerprint("q", {"a": [1, 2]})
    custom, _ = prepare_job(Job(queue="q", fingerprint="mine"))
    assert custom.fingerprint == "mine"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("job", "expected a neoq.Job"),
        (Job(queue=""), "non-empty"),
        (Job(queue="   "), "non-empty"),
        (Job(queue=5), "must be a str"),  # type: ignore[arg-type]
        (Job(queue="x" * 129), "limit is 128"),
        (Job(queue="a\x00b"), "NUL"),
        (Job(queue="q", payload={"n": float("nan")}), "JSON"),
        (Job(queue="q", payload={"n": float("-inf")}), "JSON"),
        (Job(queue="q", payload={1: 2}), "keys must be strings"),  # type: ignore[dict-item]
        (Job(queue="q", payload={"a": [{"b": {None: 1}}]}), "payload.a[0].b"),
        (Job(queue="q", payload={"s": {1, 2}}), "JSON"),
        (Job(queue="q", payload={"s": "nul\x00"}), "NUL"),
        (Job(queue="q", payload=[1]), "mapping"),  # type: ignore[arg-type]
        (Job(queue="q", run_after=datetime(2030, 1, 1)), "naive"),
        (Job(queue="q", deadline=datetime(2030, 1, 1)), "naive"),
        (Job(queue="q", run_after="2030-01-01"), "aware datetime"),  # type: ignore[arg-type]
        (Job(queue="q", max_retries=-1), "max_retries"),
        (Job(queue="q", max_retries=True), "max_retries"),
        (Job(queue="q", fingerprint=""), "fingerprint"),
        (Job(queue="q", fingerprint=7), "fingerprint"),  # type: ignore[arg-type]
        (Job(queue="q", fingerprint="a\x00b"), "fingerprint.*NUL"),
        (Job(queue="q", fingerprint="caf\udce9"), "fingerprint.*surrogate"),
        (Job(queue="q", fingerprint="\ud83d"), "fingerprint.*surrogate"),
        (Job(queue="q", fingerprint="f" * 257), "fingerprint.*256"),
        (Job(queue="q", max_retries=1_000_001), "max_retries"),
        (Job(queue="q", max_retries=2**31), "max_retries"),
        (Job(queue="q", max_retries=3.0), "max_retries"),  # type: ignore[arg-type]
        (Job(queue="q", deadline=datetime.max.replace(tzinfo=UTC)), "deadline.*1970-01-01 and 9000-01-01"),
        (Job(queue="q", run_after=datetime.min.replace(tzinfo=UTC)), "run_after.*1970-01-01 and 9000-01-01"),
        (Job(queue="q", run_after=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)), "run_after"),
        (Job(queue="q", deadline=datetime(9000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)), "deadline"),
        # Within range where they are written, out of it once in UTC.
        (Job(queue="q", run_after=datetime(1970, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))), "run_after"),
        (Job(queue="q", deadline=datetime.max.replace(tzinfo=timezone(timedelta(hours=-1)))), "deadline"),
        (Job(queue="q", run_after=datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))), "run_after"),
    ],
)
def test_prepare_rejects_with_a_clear_message(job: object, message: str) -> None:
    with pytest.raises(InvalidJobError, match=message.replace("[", r"\[").replace("]", r"\]")):
        prepare_job(job)


def test_limits_on_input_accept_their_edges() -> None:
    earliest = datetime(1970, 1, 1, tzinfo=UTC)
    latest = datetime(9000, 1, 1, tzinfo=UTC)
    job, _ = prepare_job(
        Job(queue="q", run_after=earliest, deadline=latest, max_retries=1_000_000, fingerprint="é" * 256)
    )
    assert (job.run_after, job.deadline, job.max_retries, job.fingerprint) == (earliest, latest, 1_000_000, "é" * 256)
    east = datetime(1970, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert prepare_job(Job(queue="q", run_after=east))[0].run_after == earliest


def test_deeply_nested_payload_is_refused_cleanly() -> None:
    payload: dict[str, object] = {}
    node = payload
    for _ in range(5000):
        child: dict[str, object] = {}
        node["d"] = child
        node = child
    with pytest.raises(InvalidJobError):
        prepare_job(Job(queue="q", payload=payload))


def test_to_seconds_and_error_text() -> None:
    assert to_seconds(timedelta(milliseconds=1500), "t") == 1.5
    assert to_seconds(2, "t") == 2.0
    for bad in ("1", True, float("nan"), None):
        with pytest.raises(TypeError):
            to_seconds(bad, "t")  # type: ignore[arg-type]
    assert error_text(ValueError("boom")) == "ValueError: boom"
    assert error_text(KeyError("k")) == "KeyError: 'k'"
    assert error_text(RuntimeError()) == "RuntimeError"
    assert error_text(ValueError("a\x00b")) == "ValueError: a\\x00b"

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise TypeError("no")

    name = "test_job.test_to_seconds_and_error_text.<locals>.Unprintable"  # qualified: not a builtin
    assert error_text(Unprintable()) == f"{name}: <str() of the exception raised>"


def test_error_text_is_storable_text() -> None:
    # A lone surrogate (os.fsdecode of a Latin-1 file name) cannot be encoded as UTF-8: PostgreSQL
    # refused the settle and the claim loop died. Every backend stores the same escaped text.
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    assert error_text(OSError(f"no {name}")) == "OSError: no caf\\udce9.txt"
    assert error_text(ValueError("\ud83d\x00\u00e9\U0001f600")) == "ValueError: \\ud83d\\x00\u00e9\U0001f600"
    error_text(SystemExit(f"exit {name}")).encode("utf-8")

    class Exiting(Exception):
        def __str__(self) -> str:
            raise SystemExit("no")

    assert error_text(Exiting()).endswith(".<locals>.Exiting: <str() of the exception raised>")


def test_a_plain_subclass_keeps_what_it_set_before_job_init() -> None:
    # Job.__init__ gives a Job a new instance dict; a subclass's own attributes are kept.
    class Tagged(Job):
        def __init__(self, **fields: Any) -> None:
            object.__setattr__(self, "tag", "t")
            super().__init__(**fields)

    job = Tagged(queue="q", priority=3)
    assert (job.tag, job.queue, job.priority, job.payload) == ("t", "q", 3, {})  # type: ignore[attr-defined]
    assert list(vars(job)) == ["tag", *(f.name for f in dataclasses.fields(Job))]
    assert vars(Job(queue="q", retries=2)) == {**vars(Job(queue="q")), "retries": 2}
