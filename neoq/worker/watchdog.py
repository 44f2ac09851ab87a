"""``Watchdog``: the one thread that ends running attempts at their end time (timeout or deadline)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from .attempt import Attempt

__all__ = ["LONGEST_WAIT", "Watchdog"]

logger = logging.getLogger(__name__)

#: The longest single wait of a runtime thread, in seconds. ``threading`` refuses waits above
#: ``threading.TIMEOUT_MAX`` (OverflowError; 49 days on Windows); a longer wait is cut into
#: pieces of this length, the waiter looking again after each.
LONGEST_WAIT = min(3600.0, threading.TIMEOUT_MAX)


class Watchdog:
    """One thread that ends attempts at their end time, to the millisecond, with no work per attempt.

    When it wakes it looks at every running attempt (the worker's ``running`` dict: at most the
    sum of the queues' concurrency), fires the ones whose end came, and sleeps until the earliest
    end among the others, or until ``now + shortest timeout`` of the started queues: an attempt
    that starts later ends no sooner than that, by its timeout. Only an attempt that may end
    sooner, by its job's deadline, calls ``kick``; the others cost the runtime nothing here.
    ``kick`` and ``note_timeout`` take the lock the thread holds from its look to its wait, so
    they either come before the look (which then sees the attempt) or wake the wait.

    The thread must outlive any failure, its own or ``fire``'s: without it no timeout or
    deadline is enforced. It logs what escapes and goes on.
    """

    def __init__(
        self, running: dict[str, Attempt], fire: Callable[[Attempt], None], monotonic: Callable[[], float]
    ) -> None:
        self._running = running
        self._fire = fire
        self._monotonic = monotonic
        self._cond = threading.Condition(threading.Lock())
        self._min_timeout = math.inf
        self._thread: threading.Thread | None = None
        self._stopping = False

    def note_timeout(self, timeout: float | None) -> None:
        """Claim loops whose attempts end ``timeout`` seconds after they start are about to run."""
        if timeout is not None:
            with self._cond:
                if timeout < self._min_timeout:
                    self._min_timeout = timeout
                self._wake()

    def kick(self) -> None:
        """A running attempt may end before the thread's next look (a deadline): look again now."""
        with self._cond:
            self._wake()

    def _wake(self) -> None:
        # Called with the lock held.
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="neoq-watchdog", daemon=True)
            self._thread.start()
        self._cond.notify()

    def _run(self) -> None:
        while True:
            try:
                self._watch()
                return
            except BaseException:
                logger.exception("neoq: the watchdog failed; it goes on")
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(0.1)  # a failure that repeats does not spin

    def _watch(self) -> None:
        cond = self._cond
        monotonic = self._monotonic
        while True:
            with cond:
                while True:
                    if self._stopping:
                        return
                    now = monotonic()
                    plan = now + self._min_timeout
                    due = []
                    for attempt in list(self._running.values()):  # one atomic copy
                        end = attempt._ends_at
                        if end <= now:
                            if not attempt.taken:
                                due.append(attempt)
                        elif end < plan:
                            plan = end
                    if due:
                        break
                    cond.wait(None if plan == math.inf else min(plan - now, LONGEST_WAIT))
            for attempt in due:
                try:
                    self._fire(attempt)
                except BaseException:  # the next attempts must still end on time
                    logger.exception("neoq: the watchdog failed to end the attempt of job %s", attempt.job.id)

    def stop(self) -> None:
        with self._cond:
            thread = self._thread
            self._thread = None
            self._stopping = True
            self._min_timeout = math.inf
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
