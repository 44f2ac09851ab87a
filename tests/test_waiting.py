"""The waiting policy (neoq.waiting): who looks at the store when, driven by a fake clock.

Every test but the last two runs on ``FakeClock``: time moves only through ``advance``/``run``, and
``wait_for_sleepers(n)`` returns once the ``n`` claim loops have all gone back to sleep, so counts
of looks are exact and no test sleeps. The store is a list of (due time, id) on the fake clock.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator

import pytest

from neoq.clock import SYSTEM_CLOCK, Clock
from neoq.testing import wait_for
from neoq.waiting import DUE_SLACK, HELD_POLL, FakeClock, Look, QueueWaiting, Signals, Waiting

POLL = 2.0


class Store:
    """A tiny store: jobs due at a time of ``clock``; each look is counted, with its time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.jobs: list[tuple[float, int]] = []
        self.ids = itertools.count(1)
        self.looks: list[float] = []
        self.looking = 0
        self.most_looking = 0
        #: Due jobs held by others (the look says so).
        self.held = False
        #: A look that takes a job says whether others are due, and when the next one is.
        self.complete = True
        #: Set: the next look raises it.
        self.fail: Exception | None = None
        #: Set: looks wait for it (real time) before answering.
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def add(self, delay: float = 0.0) -> int:
        with self.lock:
            job = next(self.ids)
            self.jobs.append((self.clock.monotonic() + delay, job))
            return job

    def look(self) -> Look[int]:
        with self.lock:
            self.looks.append(self.clock.monotonic())
            self.looking += 1
            self.most_looking = max(self.most_looking, self.looking)
        try:
            answer = self._answer()
            # The answer is made: what the store gets from now on, this look has missed.
            self.entered.set()
            if self.gate is not None:
                assert self.gate.wait(10)
            failure, self.fail = self.fail, None
            if failure is not None:
                raise failure
            return answer
        finally:
            with self.lock:
                self.looking -= 1

    def _answer(self) -> Look[int]:
        with self.lock:
            now = self.clock.monotonic()
            due = sorted(entry for entry in self.jobs if entry[0] <= now)
            taken = None
            if due:
                self.jobs.remove(due[0])
                taken = due[0][1]
            later = min((at for at, _ in self.jobs if at > now), default=None)
            due_in = None if later is None else later - now
            if taken is not None:
                # A complete answer when it took the only due job (a store that cannot tell
                # says more=True: the follower's look completes it).
                return Look(taken, due_in=due_in, more=len(due) > 1 or not self.complete)
            return Look(due_in=due_in, held=self.held)


class Loops:
    """``count`` claim loops, as the runtime runs them: claim, record the job, claim again."""

    def __init__(
        self, waiting: QueueWaiting, store: Store, count: int, timeout: float = 2.0, *, chain: bool = False
    ) -> None:
        self.waiting = waiting
        self.store = store
        self.count = count
        self.got: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(timeout, chain)) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _loop(self, timeout: float, chain: bool) -> None:
        while not self.stop.is_set():
            job = self.waiting.claim(self.store.look, timeout, self.stop)
            while job is not None:
                self.got.append((job, self.store.clock.monotonic()))
                # With ``chain``: the next job in the settle's step, as PostgreSQL's runtime does.
                job = self.waiting.chain(self.store.look) if chain else None

    def close(self) -> None:
        self.stop.set()
        self.waiting.close()
        for thread in self.threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self.threads)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(clock)


def start(
    clock: FakeClock, store: Store, count: int, *, notify: bool = True, timeout: float = 2.0, poll: float = POLL
) -> Loops:
    """``count`` loops on a queue polled every ``poll`` seconds, settled: every loop asleep."""
    loops = Loops(QueueWaiting("q", clock=clock, poll_interval=poll, notify=notify), store, count, timeout)
    clock.wait_for_sleepers(count)
    return loops


@pytest.fixture
def eight(clock: FakeClock, store: Store) -> Iterator[Loops]:
    loops = start(clock, store, 8)
    yield loops
    loops.close()


def test_a_single_loop_finds_a_due_job_without_waiting(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock)
    job = store.add()
    assert waiting.claim(store.look, 0) == job
    assert waiting.claim(store.look, 0) is None  # no look: nothing else was due (more=False)
    assert len(store.looks) == 1


def test_an_empty_queue_is_not_looked_at_again_while_what_a_look_said_holds(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    for _ in range(5):
        assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == 1
    clock.advance(POLL)  # a caller that never waits still looks every poll interval
    assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == 2


@pytest.mark.parametrize("concurrency", [1, 10, 50])
def test_idle_loops_look_once_per_poll_interval_between_them(clock: FakeClock, store: Store, concurrency: int) -> None:
    loops = start(clock, store, concurrency)
    try:
        before = len(store.looks)
        assert before == 1, "the loops' first claims looked more than once between them"
        clock.run(60, sleepers=concurrency)
        looks = store.looks[before:]
    finally:
        loops.close()
    assert len(looks) == 30, f"{len(looks)} looks in 30 poll intervals"
    assert all(later - earlier == pytest.approx(POLL) for earlier, later in itertools.pairwise(looks))


def test_without_notify_every_waiting_loop_polls_each_interval(clock: FakeClock, store: Store) -> None:
    loops = start(clock, store, 8, notify=False)
    try:
        start_at = clock.monotonic()
        clock.run(60, sleepers=8)
        looks = list(store.looks)
    finally:
        loops.close()
    for interval in range(30):
        low = start_at + interval * POLL
        assert any(low <= at < low + POLL for at in looks), f"no look in interval {interval}"
    assert len(looks) >= 8 * 29, f"only {len(looks)} looks: the loops did not each poll"


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_signal_wakes_exactly_one_look(clock: FakeClock, store: Store, concurrency: int) -> None:
    loops = start(clock, store, concurrency)
    try:
        before, woken = len(store.looks), clock.woken
        job = store.add()
        loops.waiting.signal()
        clock.wait_for_sleepers(concurrency)
        woken = clock.woken - woken
    finally:
        loops.close()
    assert [job for job, _ in loops.got] == [job]
    assert len(store.looks) - before == 1
    assert woken == 1, f"{woken} loops woken for one signal"


def test_a_signal_with_nothing_behind_it_costs_one_look(clock: FakeClock, store: Store, eight: Loops) -> None:
    before, woken = len(store.looks), clock.woken
    eight.waiting.signal()
    eight.waiting.signal()  # before the loop woken by the first has looked: it answers for both
    clock.wait_for_sleepers(8)
    assert len(store.looks) - before == 1
    assert clock.woken - woken == 1


@pytest.mark.parametrize("complete", [True, False])
def test_a_trickle_of_signals_costs_one_look_each(clock: FakeClock, store: Store, complete: bool) -> None:
    """8 loops and 10 local enqueues, one after the other: 10 looks when the look that takes a job
    says what else is due, 20 when it cannot (the old PostgreSQL claim needed 20, and 44 before a
    signal was looked into by one loop only)."""
    store.complete = complete
    loops = start(clock, store, 8)
    try:
        before, woken = len(store.looks), clock.woken
        for _ in range(10):
            store.add()
            loops.waiting.signal()
            clock.wait_for_sleepers(8)
            clock.advance(0.2)
        woken = clock.woken - woken
    finally:
        loops.close()
    assert len(loops.got) == 10
    assert len(store.looks) - before == (10 if complete else 20)
    assert woken == (10 if complete else 20), "the other waiting loops were woken too"


def test_a_burst_of_signals_is_drained_by_handing_the_turn_on(clock: FakeClock, store: Store, eight: Loops) -> None:
    before = len(store.looks)
    jobs = [store.add() for _ in range(10)]
    for _ in jobs:
        eight.waiting.signal()
    clock.wait_for_sleepers(8)
    assert sorted(job for job, _ in eight.got) == jobs
    assert {at for _, at in eight.got} == {clock.monotonic()}, "a follower waited instead of looking at once"
    assert len(store.looks) - before == 10


def test_a_job_taken_hands_the_turn_to_a_follower_that_looks_at_once(clock: FakeClock, store: Store) -> None:
    loops = start(clock, store, 3)
    try:
        before = len(store.looks)
        jobs = [store.add() for _ in range(3)]
        loops.waiting.signal()  # one signal for three jobs
        clock.wait_for_sleepers(3)
    finally:
        loops.close()
    assert sorted(job for job, _ in loops.got) == jobs
    assert len(store.looks) - before == 3, "one look per job: each found the next, the last said no more"
    assert store.most_looking == 1


def test_a_job_coming_due_is_looked_at_when_due_not_before(clock: FakeClock, store: Store) -> None:
    loops = start(clock, store, 8, poll=60.0)
    try:
        enqueued = clock.monotonic()
        job = store.add(delay=5.0)
        loops.waiting.signal()  # its look learns the due time
        clock.wait_for_sleepers(8)
        before = len(store.looks)
        clock.run(4.9, sleepers=8)
        assert len(store.looks) == before and not loops.got
        clock.run(0.2, sleepers=8)
    finally:
        loops.close()
    assert loops.got == [(job, pytest.approx(enqueued + 5.0 + DUE_SLACK))]
    assert store.looks[before:] == [pytest.approx(enqueued + 5.0 + DUE_SLACK)]


@pytest.mark.parametrize("complete", [True, False])
def test_a_future_job_signalled_beside_a_due_one_is_not_forgotten(
    clock: FakeClock, store: Store, complete: bool
) -> None:
    """One signal, two jobs: one due now, one in 5 s. The look that takes the first must leave the
    second's due time known (a complete answer says it; else the follower's look learns it),
    not keep what was known before the signal (nothing scheduled) until the poll."""
    store.complete = complete
    loops = start(clock, store, 8, poll=60.0)
    try:
        enqueued, before = clock.monotonic(), len(store.looks)
        now_job, later_job = store.add(), store.add(delay=5.0)
        loops.waiting.signal()
        clock.wait_for_sleepers(8)
        assert [job for job, _ in loops.got] == [now_job]
        assert len(store.looks) - before == (1 if complete else 2)
        clock.run(5.1, sleepers=8)
    finally:
        loops.close()
    assert loops.got[1:] == [(later_job, pytest.approx(enqueued + 5.0 + DUE_SLACK))]
    assert len(store.looks) - before == (2 if complete else 4)  # incomplete: each claim has a follower


def test_due_amends_what_is_known_without_a_look(clock: FakeClock, store: Store, eight: Loops) -> None:
    enqueued = clock.monotonic()
    before = len(store.looks)
    job = store.add(delay=1.5)
    eight.waiting.due(1.5)  # a local enqueue of a future job: nobody needs to look now
    clock.wait_for_sleepers(8)
    assert len(store.looks) == before
    clock.run(1.6, sleepers=8)
    assert eight.got == [(job, pytest.approx(enqueued + 1.5 + DUE_SLACK))]
    assert store.looks[before:] == [pytest.approx(enqueued + 1.5 + DUE_SLACK)]


@pytest.mark.parametrize("known", [False, True])
def test_a_job_announced_by_due_during_a_look_is_not_lost(clock: FakeClock, store: Store, known: bool) -> None:
    """The look under way may have missed the job: when nothing was known, due() is a signal and
    someone looks again; when the look is a timed one, its answer keeps the announced due time."""
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    if known:
        assert waiting.claim(store.look, 0) is None
        clock.advance(POLL)
    store.gate = threading.Event()
    result: list[tuple[int | None, float]] = []
    leader = threading.Thread(target=lambda: result.append((waiting.claim(store.look, 10), clock.monotonic())))
    leader.start()
    assert store.entered.wait(10)
    enqueued = clock.monotonic()
    job = store.add(delay=1.0)
    waiting.due(1.0)
    store.gate.set()
    clock.wait_for_sleepers(1)
    # Known: the first look and the timed one, which keeps the due time. Else: the first look, and
    # the one after the signal that due() then was.
    assert len(store.looks) == 2
    clock.advance(1.0 + DUE_SLACK)
    leader.join(10)
    assert result == [(job, pytest.approx(enqueued + 1.0 + DUE_SLACK))]


def test_a_job_announced_by_due_during_a_chained_look_is_not_lost(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=10.0)
    assert waiting.claim(store.look, 0) is None
    clock.advance(1.0)
    store.gate = threading.Event()
    chained = threading.Thread(target=waiting.chain, args=(store.look,))
    chained.start()
    assert store.entered.wait(10)
    job = store.add(delay=1.0)
    waiting.due(1.0)
    store.gate.set()
    chained.join(10)  # it answers "nothing scheduled", from before the job was stored
    store.gate = None
    assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == 2, "no look needed: the due time is kept"
    clock.advance(1.0 + DUE_SLACK)
    assert waiting.claim(store.look, 0) == job


def test_a_due_time_already_seen_is_not_kept_for_later_looks(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    assert waiting.claim(store.look, 0) is None
    first = store.add(delay=1.0)
    waiting.due(1.0)
    clock.advance(1.0 + DUE_SLACK)
    assert waiting.claim(store.look, 0) == first  # its look saw every announced job
    clock.advance(POLL)
    store.gate = threading.Event()
    timed = threading.Thread(target=waiting.claim, args=(store.look, 0))
    timed.start()
    assert store.entered.wait(10)
    looks = len(store.looks)
    store.add(delay=5.0)
    waiting.due(5.0)  # during the timed look: kept with its answer, not the first job's time
    store.gate.set()
    timed.join(10)
    store.gate = None
    assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == looks, "a due time already passed made the queue look again"


def test_held_jobs_are_polled_often_by_one_loop(clock: FakeClock, store: Store) -> None:
    store.held = True
    loops = start(clock, store, 8)
    try:
        before = len(store.looks)
        clock.run(1.0, sleepers=8)
        looks = len(store.looks) - before
    finally:
        loops.close()
    assert looks == round(1.0 / HELD_POLL)


def test_the_timed_look_survives_the_timekeeper_leaving(clock: FakeClock, store: Store) -> None:
    """Claims that end every second hand the timekeeping on; the look every 10 s still happens."""
    loops = Loops(QueueWaiting("q", clock=clock, poll_interval=10.0), store, 4, timeout=1.0)
    try:
        clock.wait_for_sleepers(4)
        before = len(store.looks)
        clock.run(60, sleepers=4)
        assert len(store.looks) - before == 6
        # A signal takes the timekeeper away too (it may be the one woken): the time is still kept.
        job = store.add()
        loops.waiting.signal()
        clock.wait_for_sleepers(4)
        assert [job for job, _ in loops.got] == [job]
        before = len(store.looks)
        clock.run(30, sleepers=4)
        assert len(store.looks) - before == 3
    finally:
        loops.close()


def test_a_timekeeper_that_leaves_hands_the_time_to_a_waiting_loop(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=10.0)
    results: list[int | None] = []

    def claim(timeout: float) -> None:
        results.append(waiting.claim(store.look, timeout))

    keeper = threading.Thread(target=claim, args=(1.0,))  # the first to wait keeps the time
    keeper.start()
    clock.wait_for_sleepers(1)
    others = [threading.Thread(target=claim, args=(1000.0,)) for _ in range(2)]
    for thread in others:
        thread.start()
    clock.wait_for_sleepers(3)
    clock.advance(1.0)  # the keeper's claim ends; its loop does not come back
    keeper.join(10)
    clock.wait_for_sleepers(2)
    job = store.add()  # without a signal: only the timed look finds it
    clock.advance(9.0)
    wait_for(lambda: len(results) == 2)
    assert results == [None, job]
    assert store.looks == [pytest.approx(1000.0), pytest.approx(1010.0)]
    waiting.close()
    for thread in others:
        thread.join(10)


def test_a_signal_during_a_look_makes_the_leader_look_again(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.gate = threading.Event()
    result: list[int | None] = []
    leader = threading.Thread(target=lambda: result.append(waiting.claim(store.look, 10)))
    leader.start()
    assert store.entered.wait(10)
    job = store.add()  # after the look read the store
    waiting.signal()
    store.gate.set()
    leader.join(10)
    assert result == [job]
    assert len(store.looks) == 2


@pytest.mark.parametrize("leader_timeout", [0.0, 10.0])
def test_claims_out_of_time_wait_for_the_look_under_way_and_take_its_answer(
    clock: FakeClock, store: Store, leader_timeout: float
) -> None:
    """Whether the leader then returns (out of time too) or waits on (it has time left)."""
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.gate = threading.Event()
    results: list[int | None] = []

    def claim(timeout: float) -> None:
        results.append(waiting.claim(store.look, timeout))

    leader = threading.Thread(target=claim, args=(leader_timeout,))
    leader.start()
    assert store.entered.wait(10)
    others = [threading.Thread(target=claim, args=(0.0,)) for _ in range(3)]
    for thread in others:
        thread.start()
    clock.wait_for_sleepers(3)  # waiting for the answer, not looking beside the leader
    store.gate.set()
    for thread in others:
        thread.join(10)
    assert results[-3:] == [None] * 3
    assert len(store.looks) == 1
    waiting.close()
    leader.join(10)


def test_wakeup_returns_that_many_blocked_claims_and_close_the_rest(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    results: list[int | None] = []
    threads = [threading.Thread(target=lambda: results.append(waiting.claim(store.look, 1000))) for _ in range(4)]
    for thread in threads:
        thread.start()
    clock.wait_for_sleepers(4)
    waiting.wakeup(0)
    waiting.wakeup(2)
    wait_for(lambda: len(results) == 2)
    assert results == [None, None]
    clock.wait_for_sleepers(2)
    waiting.close()
    for thread in threads:
        thread.join(10)
    assert results == [None] * 4
    assert waiting.claim(store.look, 1000) is None  # closed: at once
    assert len(store.looks) == 1


def test_a_wakeup_beyond_the_blocked_claims_is_not_kept(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    result: list[int | None] = []
    thread = threading.Thread(target=lambda: result.append(waiting.claim(store.look, 1000)))
    thread.start()
    clock.wait_for_sleepers(1)
    waiting.wakeup(3)
    thread.join(10)
    assert result == [None]
    job = store.add()
    waiting.signal()
    assert waiting.claim(store.look, 1000) == job  # no wake-up left over to end it early


def test_a_wakeup_counts_a_waiter_woken_before_it_that_has_not_run_yet(clock: FakeClock, store: Store) -> None:
    # A waiter woken (here by a signal, for the turn) but not yet running spends a wake-up too when it
    # runs: were it not counted, the sleeper woken beside it would find none left and sleep on (at
    # shutdown: a claim loop still claiming after the runtime stopped).
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    results: list[int | None] = []
    threads = [threading.Thread(target=lambda: results.append(waiting.claim(store.look, 1000))) for _ in range(2)]
    for thread in threads:
        thread.start()
    clock.wait_for_sleepers(2)
    held: list[threading.Condition] = []
    notify = waiting._notify
    waiting._notify = held.append  # type: ignore[method-assign]  # wake-ups are held back, then delivered
    waiting.signal()  # one waiter is woken for the turn: it has not run yet
    waiting.wakeup(2)
    waiting._notify = notify  # type: ignore[method-assign]
    with waiting._lock:
        for cond in held:
            notify(cond)
    for thread in threads:
        thread.join(10)
    assert results == [None, None]
    assert store.looks == [1000.0]  # the first claims' look; the woken ones looked no more


def test_a_wakeup_during_a_look_ends_the_leader_s_claim_after_it(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.gate = threading.Event()
    result: list[int | None] = []
    leader = threading.Thread(target=lambda: result.append(waiting.claim(store.look, 1000)))
    leader.start()
    assert store.entered.wait(10)
    waiting.wakeup(1)
    store.gate.set()
    leader.join(10)  # the look found nothing: it returns instead of waiting 1000 s
    assert result == [None]
    # A leader that took a job returns it, and the wake-up is spent: it ends no later claim.
    first = store.add()
    store.gate, store.entered = threading.Event(), threading.Event()
    waiting.signal()
    leader = threading.Thread(target=lambda: result.append(waiting.claim(store.look, 1000)))
    leader.start()
    assert store.entered.wait(10)
    waiting.wakeup(1)
    store.gate.set()
    leader.join(10)
    assert result == [None, first]
    second = store.add()
    waiting.signal()
    assert waiting.claim(store.look, 1000) == second


def test_a_stopping_loop_neither_looks_nor_waits(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    stopping = threading.Event()
    stopping.set()
    store.add()
    assert waiting.claim(store.look, 1000, stopping) is None
    assert store.looks == []


class InterruptedClock(FakeClock):
    """A fake clock whose next wait raises, as a KeyboardInterrupt in ``Condition.wait`` would."""

    interrupt = False

    def wait_until(self, cond: threading.Condition, deadline: float) -> None:
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt
        super().wait_until(cond, deadline)


def test_a_wait_that_raises_leaves_no_waiter_behind() -> None:
    clock = InterruptedClock()
    store = Store(clock)
    waiting = QueueWaiting("q", clock=clock, poll_interval=10.0)
    assert waiting.claim(store.look, 0) is None
    clock.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        waiting.claim(store.look, 100)  # it was the timekeeper
    loops = Loops(waiting, store, 1, timeout=3.0)
    try:
        clock.run(10.5, sleepers=1)
    finally:
        loops.close()
    assert store.looks == [pytest.approx(1000.0), pytest.approx(1010.0)]


def test_an_exception_in_a_look_propagates_and_frees_the_turn(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.fail = ConnectionError("store down")
    with pytest.raises(ConnectionError):
        waiting.claim(store.look, 10)
    job = store.add()
    assert waiting.claim(store.look, 0) == job


def test_a_failing_leader_does_not_strand_the_claims_waiting_for_its_answer(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.gate = threading.Event()
    store.fail = ConnectionError("store down")
    errors: list[BaseException] = []
    results: list[int | None] = []

    def leader() -> None:
        try:
            waiting.claim(store.look, 10)
        except ConnectionError as exc:
            errors.append(exc)

    first = threading.Thread(target=leader)
    first.start()
    assert store.entered.wait(10)
    job = store.add()
    second = threading.Thread(target=lambda: results.append(waiting.claim(store.look, 0)))
    second.start()
    clock.wait_for_sleepers(1)
    store.gate.set()
    first.join(10)
    second.join(10)
    assert len(errors) == 1 and results == [job]


def test_chained_looks_keep_what_they_found(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    assert waiting.chain(store.look) is None  # a loop's settle-and-claim found nothing
    assert waiting.claim(store.look, 0) is None  # ... so its claim does not look again
    assert len(store.looks) == 1
    assert waiting.chain(lambda: None) is None  # the store did not look: nothing changes
    job = store.add()
    waiting.signal()
    assert waiting.chain(store.look) == job  # a chained look takes what is due, and nothing else is
    assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == 2
    store.complete = False
    job = store.add()
    waiting.signal()
    assert waiting.chain(store.look) == job  # more=True: an incomplete answer, not kept
    assert waiting.claim(store.look, 0) is None  # so the claim looks
    assert len(store.looks) == 4


def test_a_chained_look_older_than_what_is_known_does_not_move_it_back(clock: FakeClock, store: Store) -> None:
    waiting = QueueWaiting("q", clock=clock, poll_interval=POLL)
    store.gate = threading.Event()
    chained = threading.Thread(target=waiting.chain, args=(store.look,))
    chained.start()  # a settle-and-claim look, answered at 1000 and still on its way back
    assert store.entered.wait(10)
    clock.advance(1.0)
    store.gate.set()  # (the gate only holds the first look: the leader's passes)
    store.gate = None
    assert waiting.claim(store.look, 0) is None  # the leader's look at 1001: nothing known yet
    chained.join(10)
    clock.advance(1.5)  # 1002.5: stale if the chained look's 1000 had replaced the leader's 1001
    assert waiting.claim(store.look, 0) is None
    assert len(store.looks) == 2


def test_the_waiting_of_a_process_routes_by_queue(clock: FakeClock, store: Store) -> None:
    waiting = Waiting(clock=clock, poll_interval=POLL)
    waiting.signal("nobody-claims-here")
    waiting.wakeup("nobody-claims-here", 3)
    waiting.due("nobody-claims-here", 1.0)
    assert "nobody" not in repr(waiting)
    queue = waiting.queue("q")
    assert waiting.queue("q") is queue
    assert queue.claim(store.look, 0) is None
    waiting.signal()  # every queue (a reconnect)
    assert queue.claim(store.look, 0) is None
    assert len(store.looks) == 2
    job = store.add(delay=1.0)
    waiting.due("q", 1.0)
    assert queue.claim(store.look, 0) is None  # known: due in a second
    clock.advance(1.0 + DUE_SLACK)
    assert queue.claim(store.look, 0) == job
    result: list[int | None] = []
    blocked = threading.Thread(target=lambda: result.append(queue.claim(store.look, 1000)))
    blocked.start()
    clock.wait_for_sleepers(1)
    waiting.wakeup("q", 1)
    blocked.join(10)
    assert result == [None]
    waiting.close()
    assert waiting.queue("later").claim(store.look, 10) is None


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    start_now, start_mono = clock.now(), clock.monotonic()
    cond = threading.Condition()
    woke = threading.Event()

    def sleeper() -> None:
        with cond:
            clock.wait_until(cond, start_mono + 5)
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    clock.wait_for_sleepers(1)
    clock.advance(4.9)
    assert not woke.is_set() and clock.sleepers == 1
    clock.advance(0.1)
    thread.join(10)
    assert woke.is_set()
    assert (clock.now() - start_now).total_seconds() == pytest.approx(5.0)
    with pytest.raises(ValueError):
        clock.advance(-1)


# -- real threads, real time ---------------------------------------------------------------


@pytest.mark.parametrize("chain", [False, True])
def test_many_real_threads_claim_every_job_once_and_no_wakeup_is_lost(chain: bool) -> None:
    """Eight loops and two producers on the system clock, with no timed look and no claim timeout
    to hide a lost wake-up. Each producer works in rounds: one to three jobs (some due a little
    later), then it waits until they are claimed, so the loops fall idle between rounds and every
    round's last signal must reach one. Every job is claimed exactly once; leaders never look side
    by side (chained looks do, as they should)."""
    store = Store(SYSTEM_CLOCK)
    waiting = QueueWaiting("q", poll_interval=3600)
    loops = Loops(waiting, store, 8, timeout=3600, chain=chain)
    claimed = lambda: {job for job, _ in loops.got}  # noqa: E731 - read under the GIL
    stuck: list[int] = []

    def produce(seed: int) -> None:
        for n in range(150):
            mine = set()
            for k in range(1 + (n + seed) % 3):
                delay = 0.002 if (n + k + seed) % 5 == 0 else 0.0
                mine.add(store.add(delay))
                if delay:
                    waiting.due(delay)
                else:
                    waiting.signal()
            deadline = time.monotonic() + 5
            while not mine <= claimed():
                if time.monotonic() > deadline:
                    stuck.extend(mine - claimed())
                    return
                time.sleep(0.0002)  # polling for the round's end, with a deadline

    producers = [threading.Thread(target=produce, args=(seed,)) for seed in range(2)]
    try:
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join(60)
    finally:
        loops.close()
    assert stuck == [], "jobs never claimed: a wake-up was lost"
    jobs = [job for job, _ in loops.got]
    assert sorted(jobs) == list(range(1, len(jobs) + 1)) and len(jobs) == len(set(jobs))
    if not chain:
        assert store.most_looking == 1


def test_real_threads_stop_at_once_on_wakeup() -> None:
    store = Store(SYSTEM_CLOCK)
    waiting = QueueWaiting("q", poll_interval=60)
    done = threading.Barrier(5)
    results: list[int | None] = []

    def claim() -> None:
        results.append(waiting.claim(store.look, 60))
        done.wait(10)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while waiting.claiming < 4 and time.monotonic() < deadline:
        time.sleep(0.001)  # polling for the claims to start, with a deadline
    started = time.monotonic()
    waiting.wakeup(4)
    done.wait(10)
    assert time.monotonic() - started < 5
    for thread in threads:
        thread.join(10)
    assert results == [None] * 4


def test_waiting_is_the_signals_a_store_is_given() -> None:
    signals: Signals = Waiting()
    signals.signal("q")
    signals.due("q", 1.0)


def test_look_is_a_value() -> None:
    # A plain slots class (cheaper to build than a frozen dataclass) that still compares and
    # hashes by its fields, as the dataclass did.
    assert Look() == Look(None, None, False, True)
    assert Look("job", due_in=1.5, held=True, more=False) == Look("job", 1.5, True, False)
    assert Look("job") != Look("other")
    assert Look("job") != Look("job", more=False)
    assert Look() != (None, None, False, True)
    assert hash(Look("job", 2.0)) == hash(Look("job", 2.0))
    assert len({Look(), Look(), Look(due_in=1.0)}) == 2
    assert repr(Look("job", due_in=2.0)) == "Look(claim='job', due_in=2.0, held=False, more=True)"
    assert not hasattr(Look(), "__dict__")  # slots: no stray attributes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_waiting_though_a_parent_thread_held_the_lock() -> None:
    # The lock that guards making a backend's waiting is shared by every backend; a thread of the
    # parent holding it at fork() must not leave the child's backends unable to make theirs.
    from neoq.backends.base import Backend
    from neoq.backends.memory import MemoryBackend

    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with Backend._waiting_lock:
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if it made and dropped a waiting at once
            code = 1
            try:
                done = threading.Event()

                def make() -> None:
                    backend = MemoryBackend()
                    backend.reset_waiting(close=False)
                    assert backend.waiting is not None
                    done.set()

                threading.Thread(target=make, daemon=True).start()
                code = 0 if done.wait(5) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(10)
