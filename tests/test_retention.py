"""Retention: finished jobs are deleted after their age by a pruner inside ordinary workers."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import neoq
from neoq import Job, JobStatus
from neoq.backends import MemoryBackend
from neoq.clock import Clock
from neoq.defaults import DEFAULT_RETENTION_FAILED, DEFAULT_RETENTION_PROCESSED
from neoq.errors import BackendError
from neoq.retention import MIN_PRUNE_INTERVAL, Pruner, prune_interval
from neoq.testing import neoq_threads, wait_for

DAY = 24 * 3600.0


class OffsetClock(Clock):
    """Real time shifted by ``offset`` seconds, so a test can jump days ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.offset)


def no_backoff(retries: int) -> float:
    return 0.0


def finish_one_of_each(nq: neoq.Neoq) -> dict[str, str]:
    """Enqueue and run one job that is processed, one failed, one cancelled and one left waiting."""

    def handler(job: Job) -> None:
        if job.payload["kind"] == "failed":
            raise RuntimeError("fails")

    ids = {kind: nq.enqueue(Job(queue="q", payload={"kind": kind})) for kind in ("processed", "failed")}
    ids["cancelled"] = nq.enqueue(Job(queue="q", payload={"kind": "cancelled"}))
    nq.cancel_job(ids["cancelled"])
    nq.handler("q", max_retries=0)(handler)
    nq.drain()
    ids["new"] = nq.enqueue(Job(queue="later", payload={"kind": "new"}))
    assert {kind: nq.get_job(job_id).status.value for kind, job_id in ids.items()} == {
        "processed": "processed", "failed": "failed", "cancelled": "cancelled", "new": "new"
    }
    return ids


def alive(nq: neoq.Neoq, ids: dict[str, str]) -> set[str]:
    return {kind for kind, job_id in ids.items() if nq.get_job(job_id) is not None}


def test_defaults_keep_processed_and_cancelled_7_days_and_failed_30_days():
    assert DEFAULT_RETENTION_PROCESSED == 7 * DAY and DEFAULT_RETENTION_FAILED == 30 * DAY
    clock = OffsetClock()
    with neoq.new("memory://", clock=clock) as nq:
        assert (nq.retention_processed, nq.retention_failed) == (7 * DAY, 30 * DAY)
        ids = finish_one_of_each(nq)
        pruner = nq._pruner
        clock.offset = 7 * DAY - 60
        assert pruner.prune_once() == 0
        clock.offset = 7 * DAY + 1
        assert pruner.prune_once() == 2
        assert alive(nq, ids) == {"failed", "new"}
        clock.offset = 30 * DAY - 60
        assert pruner.prune_once() == 0
        clock.offset = 30 * DAY + 1
        assert pruner.prune_once() == 1
        assert alive(nq, ids) == {"new"}
        clock.offset = 365 * DAY
        assert pruner.prune_once() == 0  # a waiting job is never pruned


def test_none_keeps_failed_jobs_forever():
    clock = OffsetClock()
    with neoq.new("memory://", clock=clock, retention_failed=None, retention_processed=timedelta(hours=1)) as nq:
        ids = finish_one_of_each(nq)
        clock.offset = 3650 * DAY
        assert nq._pruner.prune_once() == 2
        assert alive(nq, ids) == {"failed", "new"}


def test_short_ages_are_pruned_by_a_running_worker_in_real_time():
    with neoq.new("memory://", retention_processed=1.0, retention_failed=2.5) as nq:
        def handler(job: Job) -> None:
            if job.payload.get("fail"):
                raise RuntimeError("fails")

        nq.start("q", handler, max_retries=0)
        assert "neoq-pruner" in neoq_threads()
        ok = nq.enqueue(Job(queue="q", payload={"ok": 1}))
        bad = nq.enqueue(Job(queue="q", payload={"fail": 1}))
        wait_for(lambda: nq.get_job(ok).status is JobStatus.PROCESSED and nq.get_job(bad).status is JobStatus.FAILED)
        finished = time.monotonic()
        wait_for(lambda: nq.get_job(ok) is None, timeout=10)
        processed_gone = time.monotonic() - finished
        assert nq.get_job(bad) is not None  # its age is 2.5 s
        wait_for(lambda: nq.get_job(bad) is None, timeout=10)
        failed_gone = time.monotonic() - finished
        # Not before its age (the finish was stamped a little before `finished`), nor long after.
        assert 0.9 <= processed_gone < 5
        assert 2.4 <= failed_gone < 7
    assert "neoq-pruner" not in neoq_threads()


def test_only_clients_that_run_handlers_prune():
    with neoq.new("memory://", retention_processed=0.1) as producer:
        producer.enqueue(Job(queue="q"))
        assert "neoq-pruner" not in neoq_threads()
    with neoq.new("memory://", retention_processed=None, retention_failed=None) as keeper:
        keeper.start("q", lambda job: None)
        assert "neoq-pruner" not in neoq_threads()


def test_retention_settings_are_checked():
    with pytest.raises(neoq.ConfigurationError, match="retention_processed must not be negative"):
        neoq.new("memory://", retention_processed=-1)
    with pytest.raises(neoq.ConfigurationError, match="retention_failed must be a timedelta or a number"):
        neoq.new("memory://", retention_failed="30d")  # type: ignore[arg-type]


def test_prune_interval_follows_the_shortest_retention():
    assert prune_interval(7 * DAY, 30 * DAY) == 60.0
    assert prune_interval(5.0, None) == 0.5
    assert prune_interval(None, 0.01) == MIN_PRUNE_INTERVAL
    assert prune_interval(None, None) == 60.0


class CountingBackend(MemoryBackend):
    """Records the limit of every prune call; can make prune fail or hang."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.limits: list[int] = []
        self.fail = False
        self.release = threading.Event()
        self.release.set()
        self.pruning = threading.Event()

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        self.limits.append(limit)
        self.pruning.set()
        self.release.wait(10)
        if self.fail:
            raise BackendError("the store is down")
        return super().prune(older_than, limit)


def test_a_round_deletes_in_small_batches_until_one_comes_back_short():
    clock = OffsetClock()
    backend = CountingBackend(clock=clock)
    with neoq.new(backend=backend, clock=clock) as nq:
        nq.handler("q")(lambda job: None)
        nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(25)])
        nq.drain()
        pruner = Pruner(backend, processed=1.0, failed=None, clock=clock, log=logging.getLogger("test"), batch=10)
        clock.offset = 2.0
        assert pruner.prune_once() == 25
        assert backend.limits == [10, 10, 10]
        assert nq.stats() == {}


def test_pruning_that_fails_or_hangs_never_blocks_jobs(caplog):
    backend = CountingBackend()
    backend.fail = True
    backend.release.clear()  # the first prune hangs until released
    with neoq.new(backend=backend, retention_processed=0.2) as nq:
        done = threading.Event()
        nq.start("q", lambda job: done.set() if job.payload.get("last") else None)
        assert backend.pruning.wait(5)  # the pruner is stuck in the store
        nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(50)] + [Job(queue="q", payload={"last": 1})])
        assert done.wait(5)
        with caplog.at_level(logging.WARNING, logger="neoq"):
            backend.release.set()
            wait_for(lambda: nq._pruner.rounds >= 1)
        assert any("pruning finished jobs failed (the store is down)" in r.getMessage() for r in caplog.records)
        backend.fail = False
        wait_for(lambda: nq.stats().get("q", {}).get("processed", 0) == 0, timeout=10)


@pytest.mark.postgres
def test_short_ages_are_pruned_on_postgres(pg_clean):
    with neoq.new(pg_clean, retention_processed=1.0, retention_failed=2.5, shutdown_timeout=5) as nq:

        def handler(job: Job) -> None:
            if job.payload.get("fail"):
                raise RuntimeError("fails")

        nq.start("retention-pg", handler, max_retries=0)
        ok = nq.enqueue(Job(queue="retention-pg", payload={"ok": 1}))
        bad = nq.enqueue(Job(queue="retention-pg", payload={"fail": 1}))
        cancelled = nq.enqueue(Job(queue="retention-pg", payload={"later": 1}, run_after=far_future()))
        nq.cancel_job(cancelled)
        waiting = nq.enqueue(Job(queue="retention-pg", payload={"later": 2}, run_after=far_future()))
        wait_for(lambda: nq.get_job(ok).status is JobStatus.PROCESSED and nq.get_job(bad).status is JobStatus.FAILED)
        finished = time.monotonic()
        wait_for(lambda: nq.get_job(ok) is None and nq.get_job(cancelled) is None, timeout=10)
        assert time.monotonic() - finished >= 0.9
        assert nq.get_job(bad) is not None
        wait_for(lambda: nq.get_job(bad) is None, timeout=10)
        assert time.monotonic() - finished >= 2.4
        assert nq.get_job(waiting).status is JobStatus.NEW  # never pruned


def far_future() -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=1)
