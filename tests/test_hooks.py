"""Hooks (``nq.on``) and the job outcome log lines, on the memory backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import neoq
from neoq import Job, JobEvent, JobStatus
from neoq.hooks import EVENTS
from neoq.testing import wait_for


@pytest.fixture
def nq() -> Iterator[neoq.Neoq]:
    client = neoq.new("memory://", shutdown_timeout=2)
    yield client
    client.shutdown()


class Recorder:
    """Records every event of a client, thread-safely."""

    def __init__(self, nq: neoq.Neoq) -> None:
        self.events: list[JobEvent] = []
        self._lock = threading.Lock()
        for name in EVENTS:
            nq.on(name, self)

    def __call__(self, event: JobEvent) -> None:
        with self._lock:
            self.events.append(event)

    def names(self, job_id: str | None = None) -> list[str]:
        with self._lock:
            return [e.name for e in self.events if job_id is None or e.job.id == job_id]

    def of(self, name: str) -> list[JobEvent]:
        with self._lock:
            return [e for e in self.events if e.name == name]


def no_backoff(retries: int) -> float:
    return 0.0


def test_success_fires_enqueued_started_succeeded(nq):
    record = Recorder(nq)
    job_id = nq.enqueue(Job(queue="q", payload={"n": 1}))
    assert record.names() == ["enqueued"]
    enqueued = record.of("enqueued")[0]
    assert enqueued.job.id == job_id and enqueued.job.payload == {"n": 1} and enqueued.exception is None
    nq.start("q", lambda job: None)
    wait_for(lambda: record.of("succeeded"))
    assert record.names(job_id) == ["enqueued", "started", "succeeded"]
    succeeded = record.of("succeeded")[0]
    assert succeeded.job.status is JobStatus.PROCESSED and succeeded.job.attempts == 1
    assert succeeded.duration is not None and succeeded.duration >= 0


def test_a_result_that_cannot_be_stored_fires_finally_failed_with_the_invalid_job_error(nq):
    record = Recorder(nq)
    nq.start("q", lambda job: {"when": datetime.now(timezone.utc)}, max_retries=3)
    job_id = nq.enqueue(Job(queue="q"))
    wait_for(lambda: record.of("finally_failed"))
    assert record.names(job_id) == ["enqueued", "started", "failed", "finally_failed"]  # never retried
    failed = record.of("finally_failed")[0]
    assert isinstance(failed.exception, neoq.InvalidJobError) and "datetime" in str(failed.exception)
    assert failed.job.error == f"InvalidJobError: {failed.exception}"


def test_failures_fire_failed_with_the_exception_then_retried_or_finally_failed(nq):
    record = Recorder(nq)
    boom = ValueError("boom")

    def handler(job: Job) -> None:
        raise boom

    # One thread: with more, another could claim the retry before this one fired "retried".
    nq.start("q", handler, max_retries=1, backoff=no_backoff, concurrency=1)
    job_id = nq.enqueue(Job(queue="q"))
    wait_for(lambda: record.of("finally_failed"))
    assert record.names(job_id) == ["enqueued", "started", "failed", "retried", "started", "failed", "finally_failed"]
    first_failure, retried = record.of("failed")[0], record.of("retried")[0]
    assert first_failure.exception is boom and retried.exception is boom
    assert retried.job.status is JobStatus.NEW and retried.job.retries == 1
    assert retried.run_after is not None and retried.job.error == "ValueError: boom"
    final = record.of("finally_failed")[0]
    assert final.exception is boom and final.job.status is JobStatus.FAILED and final.run_after is None


def test_a_timeout_gives_the_hooks_a_job_timeout_error(nq):
    record = Recorder(nq)
    nq.start("q", lambda job: neoq.job_context().cancelled.wait(5), timeout=0.05, max_retries=0)
    nq.enqueue(Job(queue="q"))
    final = wait_for(lambda: record.of("finally_failed"))[0]
    assert isinstance(final.exception, neoq.JobTimeoutError)
    assert record.of("failed")[0].exception is final.exception


def test_a_passed_deadline_fails_without_running(nq):
    record = Recorder(nq)
    nq.enqueue(Job(queue="q", deadline=datetime.now(timezone.utc) - timedelta(seconds=1)))
    nq.start("q", lambda job: None)
    final = wait_for(lambda: record.of("finally_failed"))[0]
    assert isinstance(final.exception, neoq.DeadlineExceededError)
    assert "started" not in record.names()


def test_cancelling_a_running_job_fires_cancelled(nq):
    record = Recorder(nq)
    running = threading.Event()

    def handler(job: Job) -> None:
        running.set()
        neoq.job_context().cancelled.wait(5)

    nq.start("q", handler)
    job_id = nq.enqueue(Job(queue="q"))
    assert running.wait(5)
    nq.cancel_job(job_id)
    cancelled = wait_for(lambda: record.of("cancelled"))[0]
    assert cancelled.job.id == job_id and cancelled.job.status is JobStatus.CANCELLED


def test_enqueue_many_fires_one_enqueued_per_job(nq):
    record = Recorder(nq)
    ids = nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(3)])
    assert [e.job.id for e in record.of("enqueued")] == ids


def test_a_raising_hook_is_logged_and_never_breaks_the_job(nq, caplog):
    def bad(event: JobEvent) -> None:
        raise RuntimeError(f"hook bug on {event.name}")

    for name in EVENTS:
        nq.on(name, bad)
    record = Recorder(nq)  # registered after the bad hooks: still called
    done = threading.Event()
    nq.start("q", lambda job: done.set())
    with caplog.at_level(logging.ERROR, logger="neoq"):
        job_id = nq.enqueue(Job(queue="q"))
        assert done.wait(5)
        wait_for(lambda: record.of("succeeded"))
    assert nq.get_job(job_id).status is JobStatus.PROCESSED
    messages = [r.getMessage() for r in caplog.records if "hook" in r.getMessage()]
    assert any("enqueued hook" in m and f"job {job_id}" in m for m in messages)
    assert any("succeeded hook" in m for m in messages)
    assert all(r.exc_info for r in caplog.records if "hook" in r.getMessage())


@pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt(), GeneratorExit()], ids=type)
def test_a_hook_raising_any_base_exception_does_not_stop_the_queue(nq, caplog, exc):
    # It escaped Hooks._fire and ended the claim loop: at concurrency 1 the queue stopped for good.
    def bad(event: JobEvent) -> None:
        # A fresh exception each time: one instance raised again and again grows its traceback.
        raise type(exc)(*exc.args)

    for name in ("started", "succeeded", "failed", "finally_failed"):
        nq.on(name, bad)
    nq.start("q", neoq.Handler(lambda job: job.payload.get("fail") and 1 / 0, concurrency=1, max_retries=0))
    with caplog.at_level(logging.ERROR, logger="neoq"):
        ids = [nq.enqueue(Job(queue="q", payload={"fail": n == 0, "n": n})) for n in range(3)]
        finished = {JobStatus.PROCESSED, JobStatus.FAILED}
        wait_for(lambda: all(nq.get_job(i).status in finished for i in ids))
    assert [nq.get_job(i).status for i in ids] == [JobStatus.FAILED, JobStatus.PROCESSED, JobStatus.PROCESSED]
    logged = [r for r in caplog.records if "hook" in r.getMessage() and r.exc_info]
    assert {r.getMessage().split()[1] for r in logged} >= {"started", "succeeded", "failed"}


def test_an_enqueued_hook_lets_ctrl_c_through_in_the_main_thread(nq):
    def interrupted(event: JobEvent) -> None:
        raise KeyboardInterrupt

    nq.on("enqueued", interrupted)
    with pytest.raises(KeyboardInterrupt):
        nq.enqueue(Job(queue="q"))


def test_decorator_form_off_and_unknown_events(nq):
    seen: list[str] = []

    @nq.on("enqueued")
    def hook(event: JobEvent) -> None:
        seen.append(event.job.id or "")

    assert callable(hook)
    first = nq.enqueue(Job(queue="q", payload={"n": 1}))
    nq.off("enqueued", hook)
    nq.off("enqueued", hook)  # harmless twice
    nq.enqueue(Job(queue="q", payload={"n": 2}))
    assert seen == [first]
    with pytest.raises(neoq.ConfigurationError, match=r"unknown hook event 'done'.*succeeded"):
        nq.on("done", hook)
    with pytest.raises(neoq.ConfigurationError, match="callable"):
        nq.on("failed", "not callable")  # type: ignore[arg-type]


def test_outcome_log_lines_and_levels(nq, caplog):
    def handler(job: Job) -> None:
        if job.payload.get("fail"):
            raise KeyError("x")
        if job.payload.get("wait"):
            neoq.job_context().cancelled.wait(5)

    nq.start("q", handler, max_retries=1, backoff=no_backoff)
    with caplog.at_level(logging.DEBUG, logger="neoq"):
        ok = nq.enqueue(Job(queue="q", payload={"ok": 1}))
        bad = nq.enqueue(Job(queue="q", payload={"fail": 1}))
        slow = nq.enqueue(Job(queue="q", payload={"wait": 1}))
        wait_for(lambda: nq.get_job(bad).status is JobStatus.FAILED and nq.get_job(slow).attempts == 1)
        nq.cancel_job(slow)
        wait_for(lambda: nq.get_job(slow).status is JobStatus.CANCELLED)
        wait_for(lambda: any(getattr(r, "outcome", None) == "cancelled" for r in caplog.records))
    outcomes = {(r.job_id, r.outcome): r for r in caplog.records if hasattr(r, "outcome")}
    assert outcomes[(ok, "processed")].levelno == logging.INFO
    assert outcomes[(bad, "retry")].levelno == logging.WARNING
    assert outcomes[(bad, "failed")].levelno == logging.ERROR
    assert outcomes[(slow, "cancelled")].levelno == logging.INFO
    final = outcomes[(bad, "failed")]
    assert final.queue == "q" and final.attempt == 2 and final.duration_ms >= 0 and final.error == "KeyError: 'x'"
    assert final.getMessage().startswith(f"neoq: job {bad} queue='q' attempt=2 failed for good after ")
    # One line per outcome: exactly four outcome records for four outcomes.
    assert len([r for r in caplog.records if hasattr(r, "outcome")]) == 4


def test_hooks_run_in_the_handler_thread(nq):
    threads: dict[str, str] = {}
    nq.on("started", lambda e: threads.__setitem__("started", threading.current_thread().name))
    nq.on("succeeded", lambda e: threads.__setitem__("succeeded", threading.current_thread().name))
    ran: list[str] = []
    nq.start("q", lambda job: ran.append(threading.current_thread().name))
    nq.enqueue(Job(queue="q"))
    wait_for(lambda: "succeeded" in threads)
    assert threads["started"] == threads["succeeded"] == ran[0]
