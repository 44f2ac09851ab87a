"""The in-memory backend's places for jobs (see ``neoq/backends/memory/``): per queue a ``queue.Queue``
of due jobs kept in order (a deque for jobs that arrive in order, a heap for the others) and a heap
of future jobs, and its claims through ``neoq.waiting``.

Claims must come in order of ``run_after``, then id, whichever place a job waits in. The ordering
tests call ``look`` (the store's answer, which the waiting does not filter); the claims through the
waiting run on ``neoq.waiting.FakeClock``, with no sleeps.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import neoq
from neoq import Handler, Job, JobStatus
from neoq.backends.base import Claim, Outcome
from neoq.backends.memory import MemoryBackend, queues
from neoq.backends.memory import backend as memory_backend
from neoq.clock import Clock
from neoq.job import prepare_job
from neoq.testing import wait_for
from neoq.waiting import FakeClock

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


class _Clock(Clock):
    """Wall-clock time set by hand (the waiting is not used: tests call ``look``)."""

    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at

    def set(self, seconds: float) -> None:
        self.at = T0 + timedelta(seconds=seconds)


@pytest.fixture(autouse=True, params=[True, False], ids=["lock-free", "locked"])
def lock_free(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run each test with the take and the processed settle without locks, and as on a Python without a GIL."""
    monkeypatch.setattr(queues, "LOCK_FREE", request.param)
    monkeypatch.setattr(memory_backend, "LOCK_FREE", request.param)  # the settle of a processed job
    return bool(request.param)


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
    while (claim := backend.look(queue).claim) is not None:
        ids.append(claim.job.id or "")
        backend.settle(claim, Outcome(JobStatus.PROCESSED))
    return ids


def _places(backend: MemoryBackend, queue: str = "q") -> tuple[int, int, int]:
    """How many entries wait in the due deque, the due heap and the future heap."""
    jobs = backend._queues[queue]
    return len(jobs.due.fifo), len(jobs.due.heap), len(jobs.future)


def test_jobs_enqueued_due_now_wait_in_the_deque_in_order() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    ids = []
    for second in range(5):
        clock.set(second)
        ids.append(_enqueue(backend))
    assert _places(backend) == (5, 0, 0)
    assert _claim_ids(backend) == ids


def test_a_job_due_before_the_deque_s_last_one_waits_in_the_heap_and_comes_first() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    a = _enqueue(backend)
    clock.set(20)
    b = _enqueue(backend)
    past = _enqueue(backend, run_after=15)  # between a and b
    earliest = _enqueue(backend, run_after=1)  # before all
    assert _places(backend) == (2, 2, 0)
    assert _claim_ids(backend) == [earliest, a, past, b]


def test_a_clock_that_went_back_does_not_reorder_the_deque() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    later = _enqueue(backend)
    clock.set(5)
    earlier = _enqueue(backend)
    assert _places(backend) == (1, 1, 0)
    assert _claim_ids(backend) == [earlier, later]


def test_jobs_with_the_same_run_after_come_in_id_order_across_both_places() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    first = _enqueue(backend)
    clock.set(20)
    later = _enqueue(backend)
    tie = _enqueue(backend, run_after=10)  # the same run_after as ``first``, in the heap
    assert _places(backend) == (2, 1, 0)
    assert _claim_ids(backend) == [first, tie, later]


def test_a_batch_with_run_afters_in_the_past_is_claimed_in_run_after_order() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(100)
    jobs = [
        prepare_job(Job(queue="q", payload={"n": n}, run_after=T0 + timedelta(seconds=s)))[0]
        for n, s in ((0, 99), (1, 97), (2, 98))
    ]
    ids = backend.enqueue(jobs)
    assert _claim_ids(backend) == [ids[1], ids[2], ids[0]]


def test_a_retry_interleaves_with_fresh_jobs_by_its_run_after() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    fresh = []
    for second in range(1, 4):
        clock.set(second)
        fresh.append(_enqueue(backend))
    claim = backend.look("q").claim
    assert claim is not None and claim.job.id == fresh[0]
    # Retried to run at 2.5 s: after fresh[1] (2 s), before fresh[2] (3 s). The deque's last entry
    # is fresh[2], so the retry waits in the due heap.
    backend.settle(claim, Outcome(JobStatus.NEW, "boom", T0 + timedelta(seconds=2.5), 1))
    assert _places(backend) == (2, 1, 0)
    assert _claim_ids(backend) == [fresh[1], fresh[0], fresh[2]]


def test_a_retry_due_now_goes_to_the_end_of_the_deque() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    a, b = _enqueue(backend), _enqueue(backend)
    claim = backend.claim("q", 0)
    assert claim is not None and claim.job.id == a
    clock.set(1)
    following = backend.settle_then_claim(claim, Outcome(JobStatus.NEW, "boom", None, 1), "q")
    assert following is not None and following.job.id == b
    assert _places(backend) == (1, 0, 0)
    backend.settle(following, Outcome(JobStatus.PROCESSED))
    assert _claim_ids(backend) == [a]
    job = backend.get_job(a)
    assert job is not None and job.attempts == 2 and job.status is JobStatus.PROCESSED


def test_a_future_retry_waits_in_the_future_heap() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    job_id = _enqueue(backend)
    claim = backend.look("q").claim
    assert claim is not None
    backend.settle(claim, Outcome(JobStatus.NEW, "boom", T0 + timedelta(seconds=3), 1))
    assert _places(backend) == (0, 0, 1)
    look = backend.look("q")
    assert look.claim is None and look.due_in == 3.0
    clock.set(3)
    assert _claim_ids(backend) == [job_id]


def test_delayed_jobs_that_come_due_keep_their_order_with_the_deque() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    delayed = [_enqueue(backend, run_after=second) for second in (5, 6)]
    assert _places(backend) == (0, 0, 2)
    clock.set(5.5)
    fresh = _enqueue(backend)
    clock.set(7)
    assert _claim_ids(backend) == [delayed[0], fresh, delayed[1]]


def test_a_look_says_when_the_next_job_comes_due_and_whether_more_are_due() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    assert backend.look("q").due_in is None  # a queue it never saw
    _enqueue(backend, run_after=4)
    _enqueue(backend, run_after=9)
    look = backend.look("q")
    assert (look.claim, look.due_in) == (None, 4.0)
    first, second = _enqueue(backend), _enqueue(backend)
    look = backend.look("q")
    assert look.claim is not None and look.claim.job.id == first and look.more
    look = backend.look("q")
    assert look.claim is not None and look.claim.job.id == second
    assert not look.more and look.due_in == 4.0  # a complete answer: nothing else is due
    clock.set(4.5)
    look = backend.look("q")
    assert look.claim is not None and not look.more and look.due_in == 4.5


def test_a_cancelled_job_in_the_deque_is_skipped() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    ids = [_enqueue(backend) for _ in range(4)]
    backend.cancel_job(ids[0])
    backend.cancel_job(ids[2])
    backend.cancel_job(ids[3])
    assert _claim_ids(backend) == [ids[1]]
    assert backend.look("q").claim is None
    statuses = [job.status for job in backend.list_jobs("q", None, 10)]
    assert statuses.count(JobStatus.CANCELLED) == 3


def test_cancelled_heads_of_every_place_are_skipped() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    fifo_head, fifo_next = _enqueue(backend), _enqueue(backend)
    heap_head, heap_next = _enqueue(backend, run_after=1), _enqueue(backend, run_after=2)
    future_head, future_next = _enqueue(backend, run_after=20), _enqueue(backend, run_after=21)
    assert _places(backend) == (2, 2, 2)
    for job_id in (heap_head, fifo_head, future_head):
        backend.cancel_job(job_id)
    assert _claim_ids(backend) == [heap_next, fifo_next]
    clock.set(30)
    assert _claim_ids(backend) == [future_next]
    assert _places(backend) == (0, 0, 0)


def test_a_retried_job_whose_old_entry_is_stale_runs_once() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    job_id = _enqueue(backend)
    backend.cancel_job(job_id)
    backend.retry_job(job_id)  # a new entry, a new version: the old entry is stale
    assert _places(backend) == (2, 0, 0)
    assert _claim_ids(backend) == [job_id]
    assert _places(backend) == (0, 0, 0)


def test_a_settle_of_a_stale_claim_changes_nothing() -> None:
    backend = MemoryBackend(clock=_Clock())
    job_id = _enqueue(backend)
    claim = backend.look("q").claim
    assert claim is not None
    backend.settle(claim, Outcome(JobStatus.NEW, "boom", None, 1))
    again = backend.look("q").claim
    assert again is not None and again.job.id == job_id and again.job.attempts == 2
    backend.settle(claim, Outcome(JobStatus.FAILED, "late"))  # the first claim's token is stale
    job = backend.get_job(job_id)
    assert job is not None and job.status is JobStatus.RUNNING


def test_sequential_claims_follow_run_after_then_id_through_a_random_history() -> None:
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
            look = backend.look("q")
            if not due:
                assert look.claim is None
                future = [key[0] for key in waiting.values()]
                if future:  # stale entries of cancelled jobs may make it earlier, never later
                    assert look.due_in is not None and look.due_in <= min(future) - now
                continue
            expected = min(due)
            assert look.claim is not None, expected
            assert int(look.claim.job.id or "") == expected[1]
            del waiting[look.claim.job.id or ""]
            claimed.append(look.claim)
        fifo, heap, _ = _places(backend)
        used["both" if fifo and heap else "fifo" if fifo else "heap" if heap else "none"] += 1
    assert min(used.values()) > 50, used  # the history went through every combination


# -- claims through neoq.waiting, on a fake clock ----------------------------------------


def _claim_in_thread(backend: MemoryBackend, timeout: float) -> tuple[threading.Thread, list[Claim | None]]:
    got: list[Claim | None] = []
    thread = threading.Thread(target=lambda: got.append(backend.claim("q", timeout)), daemon=True)
    thread.start()
    return thread, got


def test_a_blocked_claim_is_woken_by_an_enqueue() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    thread, got = _claim_in_thread(backend, 60)
    clock.wait_for_sleepers(1)
    job_id = _enqueue(backend)
    thread.join(10)
    assert not thread.is_alive() and got[0] is not None and got[0].job.id == job_id
    assert backend.waiting.queue("q").looks == 2  # the first look, and the one the enqueue asked for


def test_a_blocked_claim_takes_a_future_job_when_it_comes_due_not_before() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    job_id = backend.enqueue([prepare_job(Job(queue="q", run_after=clock.now() + timedelta(seconds=5)))[0]])[0]
    thread, got = _claim_in_thread(backend, 60)
    clock.wait_for_sleepers(1)
    clock.run(4.9, sleepers=1)
    assert got == []  # looked at 0 s, then each poll interval (2 s): nothing due yet
    assert backend.waiting.queue("q").looks == 3
    clock.advance(0.2)
    thread.join(10)
    assert not thread.is_alive() and got[0] is not None and got[0].job.id == job_id


def test_a_future_job_enqueued_while_a_claim_waits_re_times_it() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    thread, got = _claim_in_thread(backend, 60)
    clock.wait_for_sleepers(1)
    job_id = backend.enqueue([prepare_job(Job(queue="q", run_after=clock.now() + timedelta(seconds=3)))[0]])[0]
    clock.wait_for_sleepers(1)
    assert backend.waiting.queue("q").looks == 1  # due() amended what was known: no look
    clock.advance(3.01)
    thread.join(10)
    assert not thread.is_alive() and got[0] is not None and got[0].job.id == job_id


def test_a_retry_wakes_a_blocked_claim_when_due() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    job_id = _enqueue(backend)
    claim = backend.claim("q", 0)
    assert claim is not None
    thread, got = _claim_in_thread(backend, 60)
    clock.wait_for_sleepers(1)
    backend.settle(claim, Outcome(JobStatus.NEW, "boom", clock.now() + timedelta(seconds=2), 1))
    clock.wait_for_sleepers(1)
    clock.advance(2.01)
    thread.join(10)
    assert not thread.is_alive() and got[0] is not None and got[0].job.id == job_id and got[0].job.attempts == 2


def test_wakeup_and_close_end_blocked_claims() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    first, got_first = _claim_in_thread(backend, 60)
    second, got_second = _claim_in_thread(backend, 60)
    clock.wait_for_sleepers(2)
    backend.wakeup("q", 1)
    clock.wait_for_sleepers(1)
    backend.close()
    first.join(10)
    second.join(10)
    assert got_first == [None] and got_second == [None]
    # open() again: a new waiting, and the jobs are still there
    backend.open()
    job_id = _enqueue(backend)
    claim = backend.claim("q", 0)
    assert claim is not None and claim.job.id == job_id


def test_the_chained_claim_takes_the_next_job_and_keeps_a_complete_answer() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    a, b = _enqueue(backend), _enqueue(backend)
    claim = backend.claim("q", 0)
    assert claim is not None and claim.job.id == a
    following = backend.settle_then_claim(claim, Outcome(JobStatus.PROCESSED), "q")
    assert following is not None and following.job.id == b
    looks = backend.waiting.queue("q").looks
    assert backend.settle_then_claim(following, Outcome(JobStatus.PROCESSED), "q") is None
    assert backend.claim("q", 0) is None  # the chained look said "nothing due": kept, no look
    assert backend.waiting.queue("q").looks == looks


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


class _StealingDeque(collections.deque):  # type: ignore[type-arg]
    """A deque whose head a take without the mutex pops right after the mutex's holder read it, once."""

    stolen: Any = None

    def __getitem__(self, index: Any) -> Any:
        head = super().__getitem__(index)
        if index == 0 and self.stolen is None:
            self.stolen = super().popleft()
        return head


def test_a_take_whose_compared_head_went_meanwhile_keeps_the_order() -> None:
    clock = _Clock()
    backend = MemoryBackend(clock=clock)
    clock.set(10)
    _enqueue(backend)  # the deque's head, taken by "another claim" during the comparison
    clock.set(12)
    last = _enqueue(backend)
    middle = _enqueue(backend, run_after=11)  # in the due heap: takes go through the mutex
    due = backend._queues["q"].due
    due.fifo = _StealingDeque(due.fifo)
    # The take compared the deque's head (10 s) with the heap's (11 s) and popped the deque, but
    # got the 12 s job: it puts it in the heap and takes the 11 s job first.
    assert _claim_ids(backend) == [middle, last]
    assert due.fifo.stolen is not None
