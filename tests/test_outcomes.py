"""neoq.outcomes: the texts an attempt hands back; the memory backend's progress fence."""

from __future__ import annotations

import math

import pytest

import neoq
from neoq import InvalidJobError, InvalidProgressError, Job
from neoq.backends.base import Outcome
from neoq.backends.memory import MemoryBackend
from neoq.defaults import MAX_PROGRESS_NOTE_LENGTH, MAX_RESULT_SIZE, MAX_TRACEBACK_LENGTH
from neoq.job import JobStatus, prepare_job
from neoq.outcomes import check_progress, error_text, exception_name, result_text, traceback_text


class Outer:
    class NestedError(Exception):
        pass


def test_exception_names_are_qualified_unless_builtin_or_neoqs() -> None:
    assert exception_name(ValueError()) == "ValueError"
    assert exception_name(neoq.JobTimeoutError()) == "JobTimeoutError"
    assert exception_name(Outer.NestedError()) == "test_outcomes.Outer.NestedError"
    assert error_text(Outer.NestedError("x")) == "test_outcomes.Outer.NestedError: x"


def test_result_text_follows_the_payload_rules() -> None:
    assert result_text({"a": (1, 2.5, None, True), "b": "é"}) == '{"a":[1,2.5,null,true],"b":"é"}'
    assert result_text(0) == "0" and result_text("") == '""' and result_text([]) == "[]"
    for bad, named in [
        ({1: "x"}, "key 1"),
        ([math.inf], "inf"),
        ("a\x00", "NUL"),
        (b"bytes", "bytes"),
        ({"d": {1, 2}}, "result.d a set"),
        ("\udce9", "surrogate"),
    ]:
        with pytest.raises(InvalidJobError, match=named):
            result_text(bad)
    assert len(result_text("x" * (MAX_RESULT_SIZE - 2))) == MAX_RESULT_SIZE  # the limit itself is allowed
    with pytest.raises(InvalidJobError, match="MAX_RESULT_SIZE"):
        result_text("x" * (MAX_RESULT_SIZE - 1))


def test_a_long_traceback_keeps_its_start_and_its_end() -> None:
    try:
        raise RuntimeError("x" * MAX_TRACEBACK_LENGTH + " the bottom\x00")
    except RuntimeError as exc:
        text = traceback_text(exc)
    assert len(text) <= MAX_TRACEBACK_LENGTH
    assert text.startswith("Traceback (most recent call last):") and "characters left out" in text
    assert text.endswith("xx the bottom\\x00\n")


def test_check_progress() -> None:
    assert check_progress(0, None) == (0.0, None) and check_progress(1, "done") == (1.0, "done")
    assert check_progress(0.5, "a\x00b") == (0.5, "a\\x00b")
    for fraction, note in [(-0.01, None), (1.01, None), (math.nan, None), (True, None), ("1", None), (0.5, 3)]:
        with pytest.raises(InvalidProgressError):
            check_progress(fraction, note)
    with pytest.raises(InvalidProgressError, match=f"{MAX_PROGRESS_NOTE_LENGTH:,}"):
        check_progress(0.5, "n" * (MAX_PROGRESS_NOTE_LENGTH + 1))
    assert issubclass(InvalidProgressError, ValueError) and issubclass(InvalidProgressError, neoq.NeoqError)


def test_a_bare_job_context_takes_reports_and_drops_them() -> None:
    context = neoq.JobContext(Job(queue="q"), None, math.inf)
    context.progress(0.5, "kept nowhere")
    with pytest.raises(InvalidProgressError):
        context.progress(2.0)


def test_memory_drops_a_report_of_a_claim_it_no_longer_holds() -> None:
    backend = MemoryBackend()
    (job_id,) = backend.enqueue([prepare_job(Job(queue="q"))[0]])
    claim = backend.claim("q", 0)
    assert claim is not None
    backend.progress(claim, 0.5, "held")
    backend.settle(claim, Outcome(JobStatus.NEW, "ValueError: x", retries=1, traceback="T"))
    backend.progress(claim, 0.9, "late")  # the claim ended: nothing lands
    job = backend.get_job(job_id)
    assert job is not None and (job.progress, job.progress_note, job.traceback) == (0.5, "held", "T")
    backend.close()
