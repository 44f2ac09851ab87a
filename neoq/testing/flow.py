"""Part of ``BackendSuite``: flow control (docs/flow-control.md), each test gated on its capability.

Priorities, pausing queues, snoozing, uniqueness for a period, global concurrency limits and rate
limits, seen through one client. What must hold across processes is checked by the shared-store
tests (``neoq.testing.flowshared``).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from ..app import Neoq
from ..backends.capabilities import GLOBAL_LIMIT, NOTIFY, PAUSE, PRIORITY, RATE_LIMIT, SNOOZE, UNIQUE_FOR
from ..defaults import MAX_SNOOZES
from ..errors import ConfigurationError, DuplicateJobError, InvalidJobError
from ..flow import RateLimit, Snooze
from ..handler import Handler
from ..job import Job, JobStatus
from .base import SuiteBase
from .helpers import PATIENCE, utc_now, wait_for

#: How long a test watches for something that must not happen (seconds).
QUIET = 0.4


class FlowTests(SuiteBase):
    """Flow control: what a backend with each flow-control capability must do."""

    def require(self, nq: Neoq, capability: str) -> None:
        """Skip the test unless the backend declares ``capability``."""
        if capability not in nq.backend.capabilities:
            pytest.skip(f"{type(nq.backend).__name__} does not declare {capability!r}")

    # -- priorities ----------------------------------------------------------------------

    @pytest.mark.parametrize("priority", [101, -101, 1.5, 0.0, True, False, "1", None])
    def test_priority_out_of_range_is_refused_before_storing(self, nq: Neoq, priority: object) -> None:
        with pytest.raises(InvalidJobError, match="priority"):
            nq.enqueue(Job(queue="prio_bad", payload={}, priority=priority))  # type: ignore[arg-type]
        with pytest.raises(InvalidJobError, match="job 1: priority"):
            nq.enqueue_many([Job(queue="prio_bad", payload={"n": 0}), Job(queue="prio_bad", priority=priority)])  # type: ignore[arg-type]
        assert nq.list_jobs(queue="prio_bad") == []

    def test_priority_is_stored_and_shown(self, nq: Neoq) -> None:
        self.require(nq, PRIORITY)
        ids = [nq.enqueue(Job(queue="prio_show", payload={"p": p}, priority=p)) for p in (-100, 0, 7, 100)]
        assert [job.priority for job in map(nq.get_job, ids) if job is not None] == [-100, 0, 7, 100]
        assert sorted(job.priority for job in nq.list_jobs(queue="prio_show")) == [-100, 0, 7, 100]

    def test_priority_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if PRIORITY in nq.backend.capabilities:
            pytest.skip("the backend declares 'priority'")
        with pytest.raises(InvalidJobError, match="'priority' capability"):
            nq.enqueue(Job(queue="prio_none", payload={}, priority=1))
        assert nq.list_jobs(queue="prio_none") == []
        nq.enqueue(Job(queue="prio_none", payload={}, priority=0))  # the default is always fine

    @pytest.mark.parametrize("batch", [1, 80], ids=["single", "batch"])
    def test_claim_order_is_priority_then_run_after_then_enqueue_order(self, nq: Neoq, batch: int) -> None:
        self.require(nq, PRIORITY)
        past = utc_now() - timedelta(hours=1)
        jobs = []
        for n in range(80):
            priority = (0, 5, -3, 100, -100, 5, 0, 1)[n % 8]
            run_after = past + timedelta(seconds=n % 5) if n % 3 == 0 else None
            jobs.append(Job(queue="prio_order", payload={"n": n}, priority=priority, run_after=run_after))
        ids = []
        for start in range(0, len(jobs), batch):
            ids.extend(nq.enqueue_many(jobs[start : start + batch]))
        stored = {job_id: nq.get_job(job_id) for job_id in ids}
        ran: list[str] = []
        nq.handler("prio_order", concurrency=1)(lambda job: ran.append(job.id or ""))
        nq.drain(timeout=60)
        assert sorted(ran) == sorted(ids)

        def key(job_id: str) -> tuple[int, object, int]:
            job = stored[job_id]
            assert job is not None and job.run_after is not None
            return (-job.priority, job.run_after, ids.index(job_id))

        assert ran == sorted(ids, key=key)

    def test_a_large_batch_keeps_each_priority(self, nq: Neoq) -> None:
        self.require(nq, PRIORITY)
        # Large batches without run_after: PostgreSQL streams them with COPY, which writes the
        # priority column only when a job of the batch has a priority other than 0.
        for queue, priorities in (("prio_batch", [n % 3 - 1 for n in range(80)]), ("prio_batch_zero", [0] * 80)):
            ids = nq.enqueue_many([Job(queue=queue, payload={"n": n}, priority=p) for n, p in enumerate(priorities)])
            assert [getattr(nq.get_job(job_id), "priority", None) for job_id in ids] == priorities

    # -- pausing -------------------------------------------------------------------------

    def test_pause_stops_new_starts_until_resume(self, nq: Neoq) -> None:
        self.require(nq, PAUSE)
        started: list[str] = []
        release = threading.Event()

        def handler(job: Job) -> None:
            started.append(job.id or "")
            release.wait(PATIENCE)

        nq.start("paused", Handler(handler, concurrency=2))
        ids = nq.enqueue_many([Job(queue="paused", payload={"n": n}) for n in range(6)])
        wait_for(lambda: len(started) == 2)
        nq.pause_queue("paused")  # both claim loops are busy: no claim is under way
        assert nq.paused_queues() == {"paused"}
        assert nq.stats()["paused"]["paused"] == 1 and nq.stats()["paused"]["running"] == 2
        release.set()  # running attempts finish...
        wait_for(lambda: nq.stats()["paused"]["processed"] == 2)
        time.sleep(QUIET)  # ...and no other starts while paused (watched for a while)
        assert len(started) == 2 and nq.stats()["paused"]["new"] == 4
        nq.resume_queue("paused")
        assert nq.paused_queues() == set() and "paused" not in nq.stats()["paused"]
        for job_id in ids:
            self.wait_status(nq, job_id, JobStatus.PROCESSED)

    def test_a_paused_queue_waits_without_looking_again_and_again(self, nq: Neoq) -> None:
        self.require(nq, PAUSE)
        nq.pause_queue("idle_pause")
        job_id = nq.enqueue(Job(queue="idle_pause", payload={}))
        looks: list[float] = []
        look = nq.backend.look

        def counted(queue: str) -> Any:
            looks.append(time.monotonic())
            return look(queue)

        nq.backend.look = counted  # type: ignore[method-assign]
        try:
            nq.start("idle_pause", Handler(lambda job: None, concurrency=4))
            time.sleep(2 * QUIET)
            # A look or two to learn the queue is paused, then a wait for the resume's signal (or
            # the poll interval): never a look per claim loop and instant. A store without
            # "notify" is polled by each waiting loop every poll_interval, paused or idle alike.
            allowed = 6
            if NOTIFY not in nq.backend.capabilities:
                allowed += 4 * math.ceil(2 * QUIET / nq.backend.poll_interval)
            assert len(looks) <= allowed, f"{len(looks)} looks at a paused queue in {2 * QUIET}s"
            assert self.status_of(nq, job_id) is JobStatus.NEW
            nq.resume_queue("idle_pause")
            self.wait_status(nq, job_id, JobStatus.PROCESSED, timeout=PATIENCE)
        finally:
            del nq.backend.look

    def test_pause_and_resume_are_idempotent_and_check_the_name(self, nq: Neoq) -> None:
        self.require(nq, PAUSE)
        nq.resume_queue("never_paused")
        nq.pause_queue("twice")
        nq.pause_queue("twice")
        assert nq.paused_queues() == {"twice"}
        assert nq.stats()["twice"] == {"new": 0, "running": 0, "processed": 0, "failed": 0, "cancelled": 0, "paused": 1}
        nq.resume_queue("twice")
        nq.resume_queue("twice")
        assert nq.paused_queues() == set()
        for bad in ("", "x" * 129, 7):
            with pytest.raises(ConfigurationError):
                nq.pause_queue(bad)  # type: ignore[arg-type]

    def test_pause_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if PAUSE in nq.backend.capabilities:
            pytest.skip("the backend declares 'pause'")
        with pytest.raises(ConfigurationError, match="'pause' capability"):
            nq.pause_queue("q")
        assert nq.paused_queues() == set()

    # -- snoozing ------------------------------------------------------------------------

    def test_snooze_runs_the_job_again_later_without_a_failure_or_a_retry(self, nq: Neoq) -> None:
        self.require(nq, SNOOZE)
        runs: list[tuple[float, int, int, int]] = []

        def handler(job: Job) -> None:
            runs.append((time.monotonic(), job.attempts, job.snoozes, job.retries))
            if len(runs) < 3:
                raise Snooze(timedelta(milliseconds=200) if len(runs) == 1 else 0.2)

        nq.start("snooze", handler, max_retries=0)  # no retry at all: a snooze is none
        job = self.wait_status(nq, nq.enqueue(Job(queue="snooze", payload={})), JobStatus.PROCESSED)
        assert [run[1:] for run in runs] == [(1, 0, 0), (2, 1, 0), (3, 2, 0)]
        assert all(later[0] - earlier[0] >= 0.15 for earlier, later in itertools.pairwise(runs))
        assert (job.attempts, job.snoozes, job.retries, job.error) == (3, 2, 0, None)

    def test_a_snoozed_job_waits_as_new_until_its_time(self, nq: Neoq) -> None:
        self.require(nq, SNOOZE)
        runs: list[int] = []

        def handler(job: Job) -> None:
            runs.append(job.attempts)
            if len(runs) == 1:
                raise Snooze(60)

        nq.start("snooze_wait", handler)
        job_id = nq.enqueue(Job(queue="snooze_wait", payload={}))
        job = wait_for(lambda: (j := nq.get_job(job_id)) is not None and j.snoozes == 1 and j)
        assert job.status is JobStatus.NEW and job.run_after is not None and job.run_after > utc_now()
        assert runs == [1]

    def test_snoozing_past_the_cap_fails_the_job_clearly(self, nq: Neoq) -> None:
        self.require(nq, SNOOZE)

        def handler(job: Job) -> None:
            raise Snooze(0)

        nq.start("snooze_cap", handler)
        job_id = nq.enqueue(Job(queue="snooze_cap", payload={}))
        job = self.wait_status(nq, job_id, JobStatus.FAILED, timeout=60)
        assert job.snoozes == MAX_SNOOZES and job.attempts == MAX_SNOOZES + 1 and job.retries == 0
        assert job.error is not None and job.error.startswith("SnoozeLimitError:")

    def test_snooze_checks_its_delay(self) -> None:
        for bad in (-1, float("nan"), "5", timedelta(days=-1)):
            with pytest.raises(ConfigurationError, match="Snooze delay"):
                Snooze(bad)  # type: ignore[arg-type]
        assert Snooze(timedelta(minutes=1)).delay == 60.0

    def test_snooze_without_the_capability_fails_the_attempt(self, nq: Neoq) -> None:
        if SNOOZE in nq.backend.capabilities:
            pytest.skip("the backend declares 'snooze'")

        def handler(job: Job) -> None:
            raise Snooze(1)

        nq.start("snooze_none", handler, max_retries=0)
        job = self.wait_status(nq, nq.enqueue(Job(queue="snooze_none", payload={})), JobStatus.FAILED)
        assert job.error is not None and "Snooze: snoozed for 1s" in job.error

    # -- unique for a period -------------------------------------------------------------

    def test_unique_for_refuses_an_enqueue_within_the_window_whatever_the_status(self, nq: Neoq) -> None:
        self.require(nq, UNIQUE_FOR)
        first = nq.enqueue(Job(queue="unique_for", payload={"k": 1}, unique_for=timedelta(seconds=30)))
        nq.cancel_job(first)  # finished: the plain uniqueness (waiting jobs) would let a new one in
        with pytest.raises(DuplicateJobError) as refused:
            nq.enqueue(Job(queue="unique_for", payload={"k": 1}, unique_for=30))
        assert refused.value.job_id == first and "unique_for" in str(refused.value)
        # Another fingerprint, or another queue, is another key.
        nq.enqueue(Job(queue="unique_for", payload={"k": 2}, unique_for=30))
        nq.enqueue(Job(queue="unique_for_other", payload={"k": 1}, unique_for=30))
        # A job without unique_for is not refused (its fingerprint is free: the first was cancelled).
        nq.enqueue(Job(queue="unique_for", payload={"k": 1}))

    def test_unique_for_lets_the_next_enqueue_in_once_the_window_passed(self, nq: Neoq) -> None:
        self.require(nq, UNIQUE_FOR)
        nq.start("unique_later", lambda job: None)
        started = time.monotonic()
        first = nq.enqueue(Job(queue="unique_later", payload={}, unique_for=0.5))
        self.wait_status(nq, first, JobStatus.PROCESSED)

        def enqueued() -> str | None:
            try:
                return nq.enqueue(Job(queue="unique_later", payload={}, unique_for=0.5))
            except DuplicateJobError:
                return None

        second = wait_for(enqueued)
        assert second != first and time.monotonic() - started >= 0.45
        # The new job's own window decides: a short one reaches back less far.
        with pytest.raises(DuplicateJobError):
            nq.enqueue(Job(queue="unique_later", payload={}, unique_for=30))

    @pytest.mark.parametrize("size", [2, 80], ids=["insert", "copy"])
    def test_unique_for_refuses_a_whole_batch(self, nq: Neoq, size: int) -> None:
        self.require(nq, UNIQUE_FOR)
        held = nq.enqueue(Job(queue="unique_batch", payload={"n": size - 1}, unique_for=60))
        nq.cancel_job(held)
        batch = [Job(queue="unique_batch", payload={"n": n}, unique_for=60) for n in range(size)]
        with pytest.raises(DuplicateJobError, match=f"job {size - 1} ") as refused:
            nq.enqueue_many(batch)
        assert refused.value.job_id == held
        assert [job.id for job in nq.list_jobs(queue="unique_batch")] == [held]  # nothing of the batch
        assert len(nq.enqueue_many(batch[:-1])) == size - 1  # and its windows were not opened

    @pytest.mark.parametrize("unique_for", [0, -1, "1", float("nan"), timedelta(0), True])
    def test_unique_for_out_of_range_is_refused_before_storing(self, nq: Neoq, unique_for: object) -> None:
        with pytest.raises(InvalidJobError, match="unique_for"):
            nq.enqueue(Job(queue="unique_bad", payload={}, unique_for=unique_for))  # type: ignore[arg-type]
        assert nq.list_jobs(queue="unique_bad") == []

    def test_unique_for_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if UNIQUE_FOR in nq.backend.capabilities:
            pytest.skip("the backend declares 'unique_for'")
        with pytest.raises(InvalidJobError, match="'unique_for' capability"):
            nq.enqueue_many([Job(queue="unique_none", payload={}, unique_for=5)])
        assert nq.list_jobs(queue="unique_none") == []

    # -- global limits -------------------------------------------------------------------

    def test_global_limit_caps_the_jobs_running_at_once(self, nq: Neoq) -> None:
        self.require(nq, GLOBAL_LIMIT)
        lock = threading.Lock()
        running = [0]
        peak = [0]

        def handler(job: Job) -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.03)
            with lock:
                running[0] -= 1

        nq.start("limited", Handler(handler, concurrency=8, global_limit=3))
        ids = nq.enqueue_many([Job(queue="limited", payload={"n": n}) for n in range(30)])
        wait_for(lambda: nq.stats()["limited"]["processed"] == 30, timeout=60)
        assert peak[0] == 3  # reached, never passed
        # Held back is not an attempt: each job ran once.
        assert {job.attempts for job in map(nq.get_job, ids) if job is not None} == {1}

    @pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
    def test_global_limit_is_checked(self, limit: object) -> None:
        with pytest.raises(ConfigurationError, match="global_limit"):
            Handler(lambda job: None, global_limit=limit)  # type: ignore[arg-type]

    def test_global_limit_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if GLOBAL_LIMIT in nq.backend.capabilities:
            pytest.skip("the backend declares 'global_limit'")
        with pytest.raises(ConfigurationError, match="'global_limit' capability"):
            nq.start("limited_none", Handler(lambda job: None, global_limit=2))
        assert "limited_none" not in nq.handlers

    # -- rate limits ---------------------------------------------------------------------

    @staticmethod
    def most_in_a_window(starts: list[float], per: float) -> int:
        """The most of ``starts`` (monotonic seconds) that fall in any window of length ``per``."""
        ordered = sorted(starts)
        return max((sum(1 for s in ordered if first <= s < first + per) for first in ordered), default=0)

    def test_rate_limit_caps_the_starts_in_any_window(self, nq: Neoq) -> None:
        self.require(nq, RATE_LIMIT)
        starts: list[float] = []
        rate = RateLimit(5, 0.4)
        nq.start("rated", Handler(lambda job: starts.append(time.monotonic()), concurrency=4, rate_limit=rate))
        began = time.monotonic()
        ids = nq.enqueue_many([Job(queue="rated", payload={"n": n}) for n in range(15)])
        wait_for(lambda: nq.stats()["rated"]["processed"] == 15, timeout=60)
        assert self.most_in_a_window(starts, 0.4) == 5
        assert time.monotonic() - began >= 0.8  # three windows' worth: two of them waited
        # Held back is not an attempt: each job ran once.
        assert {job.attempts for job in map(nq.get_job, ids) if job is not None} == {1}

    def test_rate_limit_per_key(self, nq: Neoq) -> None:
        self.require(nq, RATE_LIMIT)
        starts: dict[str, list[float]] = {"a": [], "b": []}
        rate = RateLimit(2, timedelta(milliseconds=400), key=lambda job: job.payload["tenant"])
        nq.start(
            "rated_keys",
            Handler(lambda job: starts[job.payload["tenant"]].append(time.monotonic()), concurrency=4, rate_limit=rate),
        )
        began = time.monotonic()
        nq.enqueue_many([Job(queue="rated_keys", payload={"n": n, "tenant": "ab"[n % 2]}) for n in range(12)])
        wait_for(lambda: nq.stats()["rated_keys"]["processed"] == 12, timeout=60)
        assert self.most_in_a_window(starts["a"], 0.4) == 2 and self.most_in_a_window(starts["b"], 0.4) == 2
        # The keys' windows are apart: six starts a key take three windows, not the six of one window.
        assert time.monotonic() - began < 2.2

    @pytest.mark.parametrize(
        ("count", "per", "key"),
        [(0, 1, None), (1.5, 1, None), (True, 1, None), (1, 0, None), (1, -1, None), (1, 1, "k")],
    )
    def test_rate_limit_is_checked(self, count: object, per: object, key: object) -> None:
        with pytest.raises(ConfigurationError, match="RateLimit"):
            RateLimit(count, per, key)  # type: ignore[arg-type]

    def test_rate_limit_must_be_a_rate_limit(self) -> None:
        with pytest.raises(ConfigurationError, match="rate_limit"):
            Handler(lambda job: None, rate_limit=(5, 1))  # type: ignore[arg-type]

    def test_rate_limit_without_the_capability_is_refused(self, nq: Neoq) -> None:
        if RATE_LIMIT in nq.backend.capabilities:
            pytest.skip("the backend declares 'rate_limit'")
        with pytest.raises(ConfigurationError, match="'rate_limit' capability"):
            nq.start("rated_none", Handler(lambda job: None, rate_limit=RateLimit(1, 1)))
