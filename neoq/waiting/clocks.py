"""Waiting and waking through a clock, and a fake clock that tests move by hand.

``QueueWaiting`` never calls ``Condition.wait(timeout)`` itself: it asks its clock to wait until a
*deadline* on the clock's own monotonic time (``wait_until``) and to wake a waiter (``notify``). A
real ``neoq.clock.Clock`` has neither method, and ``waits_of`` falls back to the condition's own
real-time wait. ``FakeClock`` has both, so time passes only when a test calls ``advance``, and the
test can tell when every thread it started is asleep again (``wait_for_sleepers``): no real sleep,
no timing luck.

Why a deadline and not a timeout: a thread that read the time, was switched out, and then started
a wait of ``timeout`` seconds would sleep past the moment it meant when the fake clock moved in
between. A deadline checked under the clock's lock cannot be overtaken that way.

Why the clock also wakes: a test must know when the threads it drives have finished reacting. A
thread woken by ``notify`` is no longer asleep from that instant, before it even runs, so "every
thread is asleep" is a state that holds only once they all went back to sleep.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from ..clock import Clock

__all__ = ["FakeClock", "Notify", "WaitUntil", "waits_of"]

#: ``wait_until(cond, deadline)``: called with ``cond``'s lock held; returns with it held, at the
#: latest once the clock's ``monotonic()`` reaches ``deadline`` (``math.inf``: no deadline), or
#: earlier (woken, or spuriously: callers check again what they waited for).
WaitUntil = Callable[[threading.Condition, float], None]

#: ``notify(cond)``: wake the one thread waiting on ``cond``; called with ``cond``'s lock held.
Notify = Callable[[threading.Condition], None]

#: How long (real seconds) a fake-clock wait lasts at most: a bug that loses a wake-up makes a
#: test slow and its thread look again, never hang for ever.
_REAL_BACKSTOP = 30.0


def waits_of(clock: Clock) -> tuple[WaitUntil, Notify]:
    """The wait and the wake-up ``clock`` offers, or a real-time condition wait and notify."""
    wait_until = getattr(clock, "wait_until", None)
    notify = getattr(clock, "notify", None)
    if callable(wait_until) and callable(notify):
        return wait_until, notify

    def real_wait_until(cond: threading.Condition, deadline: float) -> None:
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return
        cond.wait(None if remaining >= threading.TIMEOUT_MAX else remaining)

    return real_wait_until, threading.Condition.notify


class FakeClock(Clock):
    """A clock that moves only when told: ``advance(seconds)`` wakes the waits it made due.

    ``now()`` starts at ``start`` (default 2030-01-01 UTC) and ``monotonic()`` at 1000.0; both move
    together and only through ``advance``. Waits through ``wait_until`` are counted as *sleepers*
    until their deadline passes or ``notify`` wakes them; ``wait_for_sleepers(n)`` lets a test
    wait (in real time, with a limit) until exactly ``n`` threads sleep, that is, until every
    thread it drives has finished reacting to the last step.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        #: Notified whenever the set of sleepers changes.
        self._changed = threading.Condition(self._lock)
        self._start = start or datetime(2030, 1, 1, tzinfo=timezone.utc)
        self._origin = 1000.0
        self._mono = self._origin
        #: The conditions slept on now, with their deadlines; a woken one is taken off at once.
        self._sleepers: dict[threading.Condition, float] = {}
        #: How many sleepers ``notify`` woke so far (not their deadlines): threads made to run.
        self.woken = 0

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._mono:g})"

    def now(self) -> datetime:
        """The fake wall-clock time (aware UTC)."""
        return self._start + timedelta(seconds=self._mono - self._origin)

    def monotonic(self) -> float:
        """The fake monotonic time, in seconds."""
        return self._mono

    def wait_until(self, cond: threading.Condition, deadline: float) -> None:
        """Sleep on ``cond`` (its lock held) until ``notify``, or until ``advance`` reaches ``deadline``."""
        with self._lock:
            if deadline <= self._mono:
                return
            self._sleepers[cond] = deadline
            self._changed.notify_all()
        try:
            cond.wait(_REAL_BACKSTOP)
        finally:
            with self._lock:
                if self._sleepers.pop(cond, None) is not None:
                    self._changed.notify_all()

    def notify(self, cond: threading.Condition) -> None:
        """Wake the thread sleeping on ``cond`` (its lock held); it stops counting as a sleeper now."""
        with self._lock:
            if self._sleepers.pop(cond, None) is not None:
                self.woken += 1
                self._changed.notify_all()
        cond.notify()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every wait whose deadline it reached."""
        if not seconds >= 0:
            raise ValueError(f"a fake clock moves forward only, not by {seconds!r}")
        self._advance_to(self._mono + seconds)

    def _advance_to(self, moment: float) -> None:
        # To a moment, not by a step: a sleeper's deadline reached by ``run`` is then reached
        # exactly, whatever the rounding of ``mono + (deadline - mono)``.
        with self._lock:
            self._mono = max(self._mono, moment)
            due = [cond for cond, deadline in self._sleepers.items() if deadline <= self._mono]
            for cond in due:
                del self._sleepers[cond]
            if due:
                self._changed.notify_all()
        # Outside the clock's lock: a sleeper holds its condition's lock while it takes the clock's.
        for cond in due:
            with cond:
                cond.notify_all()

    @property
    def sleepers(self) -> int:
        """How many threads sleep in ``wait_until`` now, not yet woken."""
        with self._lock:
            return len(self._sleepers)

    def next_deadline(self) -> float:
        """The earliest deadline of a sleeper (``math.inf`` when none has one)."""
        with self._lock:
            return min(self._sleepers.values(), default=math.inf)

    def wait_for_sleepers(self, count: int, timeout: float = 10.0) -> None:
        """Wait (real time, at most ``timeout`` seconds) until exactly ``count`` threads sleep."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._sleepers) == count, timeout):
                raise TimeoutError(f"{len(self._sleepers)} threads sleep on the fake clock, not {count}")

    def run(self, seconds: float, sleepers: int) -> None:
        """Advance by ``seconds`` in steps, from one sleeper's deadline to the next.

        Before each step, and at the end, wait until ``sleepers`` threads sleep: every deadline
        on the way wakes its thread at that very time, and the threads settle before time moves
        on. The threads the test drives must all be sleeping on this clock when it is called.
        """
        end = self._mono + seconds
        while True:
            self.wait_for_sleepers(sleepers)
            self._advance_to(min(self.next_deadline(), end))
            if self._mono >= end:
                self.wait_for_sleepers(sleepers)
                return
