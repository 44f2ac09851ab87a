"""The in-memory backend's two places for due jobs: a deque for jobs that arrive in order, a heap
for the others (see ``neoq/backends/memory.py``).

Claims must still come in order of ``run_after``, then id, whichever place a job waits in; these
tests put jobs in both, with and without the lock-free step, and race claims against each other.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends import memory
from neoq.backends.base import Claim, Outcome
from neoq.backends.memory import MemoryBackend
from neoq.clock import Clock
from neoq.job import prepare_job
from neoq.testing import wait_for

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class _Clock(Clock):
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at

    def set(self, seconds: float) -> None:
        self.at = T0 + timedelta(seconds=seconds)


@pytest.fixture(params=[True, False], ids=["lock-free", "locked"])
def lock_free(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Run the test with the lock-free claim step, and as on an interpreter without a GIL."""
    monkeypatch.setattr(memory, "_LOCK_FREE", request.param)
    yield request.param


_payloads = itertools.count()


def _enqueue(backend: MemoryBackend, run_after: float | None = None, queue: str = "q") -> str:
    job = Job(
        queue=queue,
        payload={"n": next(_payloads)},
        run_after=None if run_after is None else T0 + timedelta(seconds=run_after),
    )
    return backend.enqueue([prepare_job(job)[0]])[0]


def _claim_ids(backend: MemoryBackend, queue: str = "q") -> list[str]:
    ids = []
    while (claim := backend.claim(queue, 0)) is not None:
        ids.append(claim.job.id or "")
        backend.settle(claim, Outcome(JobStatus.PROCESSED))
    return ids


def _places(backend: MemoryBackend, queue: str = "q") -> tuple[int, int]:
    ready = backend._ready[queue]
    return len(ready.fifo), len(ready.heap)


def test_jobs_enqueued_due_now_wait_in_the_deque_in_order(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    ids = []
    for second in range(5):
        clock.set(second)
        ids.append(_enqueue(backend))
    assert _places(backend) == (5, 0)
    assert _claim_ids(backend) == ids


def test_a_job_due_before_the_deque_s_last_one_waits_in_the_heap_and_comes_first(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    a = _enqueue(backend)
    clock.set(20)
    b = _enqueue(backend)
    past = _enqueue(backend, run_after=15)  # between a and b
    earliest = _enqueue(backend, run_after=1)  # before all
    assert _places(backend) == (2, 2)
    assert _claim_ids(backend) == [earliest, a, past, b]


def test_a_clock_that_went_back_does_not_reorder_the_deque(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(100)
    later = _enqueue(backend)
    clock.set(50)
    earlier = _enqueue(backend)
    assert _places(backend) == (1, 1)
    assert _claim_ids(backend) == [earlier, later]


def test_jobs_with_the_same_run_after_come_in_id_order_across_both_places(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    first = _enqueue(backend)
    clock.set(20)
    later = _enqueue(backend)
    tie = _enqueue(backend, run_after=10)  # the same run_after as ``first``, in the heap
    assert _places(backend) == (2, 1)
    assert _claim_ids(backend) == [first, tie, later]


def test_a_retry_interleaves_with_fresh_jobs_by_its_run_after(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    fresh = []
    for second in range(1, 4):
        clock.set(second)
        fresh.append(_enqueue(backend))
    claim = backend.claim("q", 0)
    assert claim is not None and claim.job.id == fresh[0]
    # Retried to run at 2.5 s: after fresh[1] (2 s), before fresh[2] (3 s). The deque's last entry
    # is fresh[2], so the retry waits in the heap.
    backend.settle(claim, Outcome(JobStatus.NEW, "boom", T0 + timedelta(seconds=2.5), 1))
    assert _places(backend) == (2, 1)
    assert _claim_ids(backend) == [fresh[1], fresh[0], fresh[2]]


def test_a_retry_due_now_goes_to_the_end_of_the_deque(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    a, b = _enqueue(backend), _enqueue(backend)
    claim = backend.claim("q", 0)
    assert claim is not None and claim.job.id == a
    clock.set(1)
    following = backend.settle_then_claim(claim, Outcome(JobStatus.NEW, "boom", None, 1), "q")
    assert following is not None and following.job.id == b
    assert _places(backend) == (1, 0)
    backend.settle(following, Outcome(JobStatus.PROCESSED))
    assert _claim_ids(backend) == [a]
    job = backend.get_job(a)
    assert job is not None and job.attempts == 2 and job.status is JobStatus.PROCESSED


def test_delayed_jobs_that_come_due_keep_their_order_with_the_deque(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    delayed = [_enqueue(backend, run_after=second) for second in (5, 6)]
    clock.set(5.5)
    fresh = _enqueue(backend)
    clock.set(7)
    assert _claim_ids(backend) == [delayed[0], fresh, delayed[1]]


def test_a_cancelled_job_in_the_deque_is_skipped(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    ids = [_enqueue(backend) for _ in range(4)]
    backend.cancel_job(ids[0])
    backend.cancel_job(ids[2])
    backend.cancel_job(ids[3])
    assert _claim_ids(backend) == [ids[1]]
    assert backend.claim("q", 0) is None
    statuses = [job.status for job in backend.list_jobs("q", None, 10)]
    assert statuses.count(JobStatus.CANCELLED) == 3


def test_cancelled_heads_of_both_places_are_skipped(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    fifo_head, fifo_next = _enqueue(backend), _enqueue(backend)
    heap_head, heap_next = _enqueue(backend, run_after=1), _enqueue(backend, run_after=2)
    assert _places(backend) == (2, 2)
    backend.cancel_job(heap_head)
    backend.cancel_job(fifo_head)
    assert _claim_ids(backend) == [heap_next, fifo_next]
    assert _places(backend) == (0, 0)


def test_a_retried_job_whose_old_entry_is_stale_runs_once(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    job_id = _enqueue(backend)
    backend.cancel_job(job_id)
    backend.retry_job(job_id)  # a new entry, same sequence: the old one's ticket is empty
    assert _claim_ids(backend) == [job_id]


class _StealingDeque(collections.deque):  # type: ignore[type-arg]
    """A deque whose head is taken by "another claim" between a claim's look and its pop, once."""

    stolen: Any = None

    def __getitem__(self, index: Any) -> Any:
        head = super().__getitem__(index)
        if index == 0 and self.stolen is None:
            self.stolen = super().popleft()
            self.stolen[4].pop()  # that claim owns it now
        return head


class _StealingHeap(list):  # type: ignore[type-arg]
    """A heap whose head is taken by "another claim" between a claim's look and its pop, once."""

    stolen: Any = None

    def __getitem__(self, index: Any) -> Any:
        head = super().__getitem__(index)
        if index == 0 and self.stolen is None:
            import heapq

            self.stolen = heapq.heappop(self)
            self.stolen[4].pop()
        return head


def test_a_deque_head_taken_by_another_claim_meanwhile_is_not_claimed_out_of_order(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    stolen = _enqueue(backend)
    clock.set(12)
    last = _enqueue(backend)
    middle = _enqueue(backend, run_after=11)
    ready = backend._ready["q"]
    ready.fifo = _StealingDeque(ready.fifo)
    assert _places(backend) == (2, 1)
    # This claim compared the deque's head (10 s) with the heap's (11 s) and popped the deque,
    # but got the 12 s job: it must put it back in order and take the 11 s job instead.
    assert _claim_ids(backend) == [middle, last]
    assert ready.fifo.stolen[2] == stolen


def test_a_heap_head_taken_by_another_claim_meanwhile_is_not_claimed_out_of_order(lock_free: bool) -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    first = _enqueue(backend)
    clock.set(12)
    last = _enqueue(backend)
    stolen = _enqueue(backend, run_after=1)
    middle = _enqueue(backend, run_after=11)
    ready = backend._ready["q"]
    ready.heap = _StealingHeap(ready.heap)
    assert _places(backend) == (2, 2)
    # This claim compared the heap's head (1 s) with the deque's (10 s) and popped the heap, but
    # got the 11 s job: it must put it back and take the 10 s job instead.
    assert _claim_ids(backend) == [first, middle, last]
    assert ready.heap.stolen[2] == stolen


def test_sequential_claims_follow_run_after_then_id_through_a_random_history(lock_free: bool) -> None:
    rng = random.Random(6)
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    now = 0.0
    waiting: dict[str, tuple[float, int]] = {}  # id -> (run_after, id): the order claims must follow
    claimed: list[Claim] = []
    used = collections.Counter[str]()
    for _ in range(3000):
        op = rng.random()
        if op < 0.35:
            job_id = _enqueue(backend)
            waiting[job_id] = (now, int(job_id))
        elif op < 0.5:
            run_after = now + rng.randrange(-80, 20) / 4
            job_id = _enqueue(backend, run_after=run_after)
            waiting[job_id] = (run_after, int(job_id))
        elif op < 0.6:
            now += rng.choice([0.0, 0.5, 2.0])
            clock.set(now)
        elif op < 0.65 and waiting:
            job_id = rng.choice(sorted(waiting))
            backend.cancel_job(job_id)
            del waiting[job_id]
        elif op < 0.75 and claimed:
            claim = claimed.pop(rng.randrange(len(claimed)))
            if rng.random() < 0.5:
                backend.settle(claim, Outcome(JobStatus.PROCESSED))
            else:
                retry_at = now + rng.randrange(-12, 12) / 4
                backend.settle(claim, Outcome(JobStatus.NEW, "boom", T0 + timedelta(seconds=retry_at), 1))
                waiting[claim.job.id or ""] = (retry_at, int(claim.job.id or ""))
        else:
            due = [key for key in waiting.values() if key[0] <= now]
            claim = backend.claim("q", 0)
            if not due:
                assert claim is None
                continue
            expected = min(due)
            assert claim is not None, expected
            assert int(claim.job.id or "") == expected[1]
            del waiting[claim.job.id or ""]
            claimed.append(claim)
        fifo, heap = _places(backend)
        used["both" if fifo and heap else "fifo" if fifo else "heap" if heap else "none"] += 1
    assert min(used.values()) > 50, used  # the history went through every combination


def test_racing_claim_loops_run_every_job_of_both_places_once() -> None:
    n = 4000
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            runs[job.id or ""] += 1
        if job.payload["i"] % 7 == 0 and job.attempts == 1:
            raise RuntimeError("retry me")

    with neoq.new(retention_processed=None, retention_failed=None) as nq:
        nq.start("mix", Handler(handler, concurrency=8, max_retries=1, backoff=lambda retries: 0.0))
        ids: list[str] = []
        now = datetime.now(timezone.utc)
        for start in range(0, n, 200):
            batch = [
                Job(queue="mix", payload={"i": i}, run_after=now - timedelta(seconds=i % 3) if i % 2 else None)
                for i in range(start, start + 200)
            ]
            ids += nq.enqueue_many(batch)
        wait_for(lambda: nq.stats().get("mix", {}).get("processed", 0) == n, timeout=60)
        statuses = collections.Counter(nq.get_job(job_id).status for job_id in ids)  # type: ignore[union-attr]
    assert statuses == {JobStatus.PROCESSED: n}
    retried = {job_id for i, job_id in enumerate(ids) if i % 7 == 0}
    for job_id in ids:
        assert runs[job_id] == (2 if job_id in retried else 1), job_id


class _UnsettlingBackend(MemoryBackend):
    """Fails to store the outcome of the first processed attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        if self.failures == 0:
            self.failures += 1
            raise neoq.BackendError("the store went away")
        return super().settle_then_claim(claim, outcome, queue)


def test_a_processed_outcome_that_cannot_be_stored_is_logged_and_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    succeeded: list[str] = []
    with neoq.new(backend=_UnsettlingBackend()) as nq:
        nq.on("succeeded", lambda event: succeeded.append(event.job.id or ""))
        with caplog.at_level(logging.ERROR, logger="neoq"):
            lost, kept = nq.enqueue_many([Job(queue="q", payload={"n": n}) for n in range(2)])
            nq.start("q", Handler(lambda job: None, concurrency=1))
            wait_for(lambda: succeeded == [kept])
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        f"job {lost} (queue 'q', attempt 1) could not be settled as processed: the store went away" in m
        for m in messages
    ), messages


def test_a_handler_that_raises_after_its_attempt_ended_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    returned = threading.Event()

    def handler(job: Job) -> None:
        try:
            neoq.job_context().cancelled.wait(5)  # set when the timeout ends the attempt
            raise RuntimeError("too late")
        finally:
            returned.set()

    with neoq.new() as nq, caplog.at_level(logging.DEBUG, logger="neoq"):
        job_id = nq.enqueue(Job(queue="q"))
        nq.start("q", Handler(handler, timeout=0.05, max_retries=0))
        assert returned.wait(5)
        wait_for(lambda: any("raised after its attempt had ended" in r.getMessage() for r in caplog.records))
        job = nq.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert job.error.startswith("JobTimeoutError")
    [line] = [r.getMessage() for r in caplog.records if "raised after its attempt had ended" in r.getMessage()]
    assert line == f"neoq: job {job_id} (queue 'q') raised after its attempt had ended: too late"
