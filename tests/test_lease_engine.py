"""The lease engine (neoq.backends.lease) over an in-process ``LeaseStore``, with no server.

The store below keeps jobs in a dict and implements the protocol's five calls as the engine's
module docstring states them; every call is recorded, so the tests count fetches and their
limits exactly. The claim loops are a stub (``Loops``) whose ``claiming`` the test sets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from neoq import Job, JobStatus
from neoq.backends import Claim, Outcome
from neoq.backends.lease import Leased, LeaseEngine, LeaseStore, LeaseToken, Lost, Settlement
from neoq.errors import BackendError
from neoq.testing import wait_for
from neoq.waiting import Look

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Row:
    key: int
    queue: str
    due: float  # monotonic: when it is due (a lease's expiry while leased)
    token: int = 0
    attempts: int = 0
    status: str = "new"
    leased: bool = False
    cancel_requested: bool = False
    error: str | None = None


class DictStore:
    """A ``LeaseStore`` over a dict, on the process's monotonic clock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[int, Row] = {}
        self.fetches: list[int] = []  # the limit of each fetch
        self.given_back: list[int] = []
        self.written: list[tuple[int, str]] = []
        self.renewals = 0
        self.closed = False

    def add(self, key: int, queue: str = "q", due_in: float = 0.0, **fields: Any) -> None:
        self.rows[key] = Row(key, queue, time.monotonic() + due_in, **fields)

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        with self.lock:
            self.fetches.append(limit)
            now = time.monotonic()
            mine = sorted(
                (r for r in self.rows.values() if r.queue == queue and r.status == "new"), key=lambda r: r.due
            )
            leased: list[Leased] = []
            for row in [r for r in mine if r.due <= now][:limit]:
                due_at = EPOCH + timedelta(seconds=row.due)
                row.due, row.token, row.leased = now + lease, row.token + 1, True
                row.attempts += 1
                job = Job(queue=queue, payload={"key": row.key}, id=str(row.key), attempts=row.attempts)
                leased.append((job, row.key, row.token, due_at, row.cancel_requested))
            if leased:
                return leased, None, False
            later = [r.due - now for r in mine]
            return [], min(later) if later else None, False

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        with self.lock:
            written = set()
            for item in batch:
                row = self.rows.get(item.lease.job_id)
                if row is None or row.token != item.lease.token or row.status != "new":
                    continue
                row.status, row.leased, row.error = item.outcome.status.value, False, item.outcome.error
                row.cancel_requested = False
                written.add(row.key)
                self.written.append((row.key, row.status))
            return written

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        with self.lock:
            self.renewals += 1
            lost: list[Lost] = []
            for held in leases:
                row = self.rows.get(held.job_id)
                if row is None or row.token != held.token or row.status != "new":
                    lost.append((held.job_id, None if row is None else row.status))
                else:
                    row.due = time.monotonic() + lease
            return lost

    def give_back(self, leases: list[LeaseToken]) -> None:
        with self.lock:
            for held in leases:
                row = self.rows[held.job_id]
                if row.token == held.token and row.status == "new":
                    row.due = (held.due_at - EPOCH).total_seconds()
                    row.leased = False
                    row.attempts -= 1
                    self.given_back.append(row.key)

    def close(self) -> None:
        self.closed = True


class StubLoops:
    """``Loops`` of one queue: how many loops claim, the signals and chained looks the engine made."""

    def __init__(self, claiming: int = 1) -> None:
        self.claiming = claiming
        self.signals = 0
        self.chains = 0

    def signal(self) -> None:
        self.signals += 1

    def chain(self, look: Callable[[], Look[Claim] | None]) -> Claim | None:
        self.chains += 1
        result = look()
        return None if result is None else result.claim


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def loops() -> StubLoops:
    return StubLoops()


@pytest.fixture
def cancelled() -> list[str]:
    return []


def make_engine(
    store: DictStore, loops: StubLoops, cancelled: list[str], lease: float = 30.0, prefetch: int = 0
) -> LeaseEngine:
    checked: LeaseStore = store  # the dict store implements the protocol
    return LeaseEngine(
        checked, lease, loops=lambda queue: loops, prefetch=lambda queue: prefetch, notify_cancel=cancelled.append
    )


@pytest.fixture
def engine(store: DictStore, loops: StubLoops, cancelled: list[str]) -> Iterator[LeaseEngine]:
    engine = make_engine(store, loops, cancelled)  # no prefetch: no read-ahead
    yield engine
    engine.close()


def test_one_fetch_leases_for_every_claiming_loop_and_the_buffer_answers_the_followers(
    engine: LeaseEngine, store: DictStore, loops: StubLoops
) -> None:
    for key in range(6):
        store.add(key)
    loops.claiming = 4
    first = engine.look("q")
    assert first.claim is not None and first.more  # the followers look at once
    assert store.fetches == [4]  # one job for each claiming loop
    taken = [first.claim] + [engine.look("q").claim for _ in range(3)]
    assert store.fetches == [4]  # the three followers were answered from the buffer
    assert [c.job.payload["key"] for c in taken if c is not None] == [0, 1, 2, 3]
    assert all(c is not None and c.transaction is None and isinstance(c.token, LeaseToken) for c in taken)
    fifth = engine.look("q")
    assert fifth.claim is not None and fifth.claim.job.payload["key"] == 4 and store.fetches == [4, 4]


def test_nothing_due_answers_when_the_next_job_comes_due(engine: LeaseEngine, store: DictStore) -> None:
    assert engine.look("q") == Look(claim=None, due_in=None, held=False)
    store.add(1, due_in=30.0)
    answer = engine.look("q")
    assert answer.claim is None and answer.due_in is not None and 29.0 < answer.due_in <= 30.0


def test_outcomes_are_written_in_batches_fenced_by_token(engine: LeaseEngine, store: DictStore) -> None:
    for key in range(3):
        store.add(key)
    claims = [engine.look("q").claim for _ in range(3)]
    assert all(claims)
    store.rows[2].token += 1  # leased again elsewhere meanwhile: this holder's outcome is discarded
    for claim, status in zip(claims, (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.PROCESSED), strict=True):
        assert claim is not None
        engine.settle(claim, Outcome(status, None if status is JobStatus.PROCESSED else "E: x"))
        engine.settle(claim, Outcome(JobStatus.NEW))  # a second settle changes nothing
    engine.barrier()
    assert sorted(store.written) == [(0, "processed"), (1, "failed")]
    assert store.rows[2].status == "new"


def test_the_heartbeat_renews_leases_and_a_cancelled_one_reaches_its_handler(
    store: DictStore, loops: StubLoops, cancelled: list[str]
) -> None:
    engine = make_engine(store, loops, cancelled, lease=0.09)  # a beat every 0.03 s
    try:
        store.add(7)
        claim = engine.look("q").claim
        assert claim is not None
        wait_for(lambda: store.renewals >= 3)
        assert store.rows[7].leased and not cancelled  # renewed: nobody else could take it
        store.rows[7].status = "cancelled"  # cancel_job found it leased
        wait_for(lambda: cancelled == ["7"])
        assert isinstance(claim.token, LeaseToken) and claim.token.lost
    finally:
        engine.close()


def test_a_buffered_job_nobody_starts_within_a_heartbeat_is_given_back(
    store: DictStore, loops: StubLoops, cancelled: list[str]
) -> None:
    engine = make_engine(store, loops, cancelled, lease=0.09, prefetch=2)
    try:
        for key in range(3):
            store.add(key)
        assert engine.look("q").claim is not None  # one for this loop, two buffered
        wait_for(lambda: sorted(store.given_back) == [1, 2])
        assert [store.rows[k].attempts for k in (1, 2)] == [0, 0]  # uncounted
        assert engine.look("q").claim is not None and store.fetches == [3, 3]  # the buffer was emptied: a fetch
    finally:
        engine.close()


def test_close_gives_buffered_jobs_back_and_refuses_later_outcomes(
    store: DictStore, loops: StubLoops, cancelled: list[str]
) -> None:
    engine = make_engine(store, loops, cancelled, prefetch=3)
    for key in range(4):
        store.add(key)
    claim = engine.look("q").claim
    assert claim is not None
    engine.settle(claim, Outcome(JobStatus.PROCESSED))
    engine.close()
    assert store.written == [(0, "processed")]  # written before the engine stopped
    assert sorted(store.given_back) == [1, 2, 3] and store.closed
    assert engine.look("q") == Look()
    late = Claim(Job(queue="q"), None, LeaseToken(engine, 9, "q", 1, EPOCH))
    with pytest.raises(BackendError, match="closed; the outcome was not written"):
        engine.settle(late, Outcome(JobStatus.PROCESSED))
    engine.close()  # idempotent


def test_settle_then_claim_takes_buffered_jobs_and_reads_ahead_when_the_buffer_runs_low(
    store: DictStore, loops: StubLoops, cancelled: list[str]
) -> None:
    engine = make_engine(store, loops, cancelled, prefetch=4)
    try:
        for key in range(30):
            store.add(key)
        claim = engine.look("q").claim
        assert store.fetches == [5]  # one claiming loop plus four
        keys = []
        for _ in range(4):
            assert claim is not None
            claim = engine.settle_then_claim(claim, Outcome(JobStatus.PROCESSED), "q")
            assert claim is not None
            keys.append(claim.job.payload["key"])
        assert keys == [1, 2, 3, 4] and loops.chains == 4
        # The third take left one job (< half a prefetch): it leased the next batch first, for the
        # claiming loop plus three prefetches less the one still buffered, and signalled the loops.
        assert store.fetches == [5, 12] and loops.signals == 1
        assert claim is not None
        assert engine.settle_then_claim(claim, Outcome(JobStatus.PROCESSED), "q") is not None
    finally:
        engine.close()


def test_settle_then_claim_with_an_empty_buffer_does_not_look(
    engine: LeaseEngine, store: DictStore, loops: StubLoops
) -> None:
    store.add(1)
    claim = engine.look("q").claim
    assert claim is not None
    assert engine.settle_then_claim(claim, Outcome(JobStatus.PROCESSED), "q") is None
    assert loops.chains == 0 and store.fetches == [1]


def test_a_job_cancelled_before_it_started_is_settled_unrun_and_the_loops_look_again(
    engine: LeaseEngine, store: DictStore
) -> None:
    store.add(1, cancel_requested=True)
    store.add(2, due_in=60.0)
    answer = engine.look("q")
    assert answer.claim is None and answer.due_in == 0.0  # others may be due behind it: look again now
    engine.barrier()
    assert store.written == [(1, "cancelled")]
