"""This process's own enqueues and the listener's notifications of them: each enqueue signals
its queues itself, so the notification it sends is let go instead of waking a second look.

``LocalNotices`` keeps, per queue that this process claims, how many of its own enqueues'
notifications are still to come. The backend gives it narrow callbacks: whether the listener
runs (without one there is nothing to let go) and how to signal a queue (``signal``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["LocalNotices", "_QueueState"]

#: How long (seconds) the listener remembers local enqueues whose notification it lets go.
_LOCAL_NOTIFY_MEMORY = 0.5


class _QueueState:
    """One queue that this process claims: its own enqueues whose notification is still to come."""

    __slots__ = ("cond", "local", "local_at")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        #: Enqueues of this process whose own notification is still to come (they signal the
        #: queue themselves, so the listener lets that many notifications go), and when the
        #: last began: after _LOCAL_NOTIFY_MEMORY the count is forgotten.
        self.local = 0
        self.local_at = 0.0


class LocalNotices:
    """The queues this process claims and their own enqueues' notifications still to come."""

    def __init__(self, *, listening: Callable[[], bool], signal: Callable[[Iterable[str]], None]) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _QueueState] = {}
        self._listening = listening
        self._signal = signal

    def claims(self, queue: str) -> None:
        """This process claims ``queue``: its own enqueues' notifications are counted from now."""
        if queue in self._states:
            return
        with self._lock:
            if queue not in self._states:
                self._states[queue] = _QueueState(threading.Lock())

    def clear(self) -> None:
        """Forget every queue (a new open(): wake-ups left from the last must not cut claims short)."""
        self._states.clear()

    def enqueued(self, queues: Iterable[str]) -> list[_QueueState]:
        """Count an enqueue of this process on the states of its queues that this process claims;
        return those states (``undo`` takes it back).

        Counted before the statement is sent: its notification can reach the listener before
        the enqueue's own signal, and the listener must already know to let it go. Without a
        listener there is nothing to let go.
        """
        states = self._states
        if not states or not self._listening():  # no claim here (a client that only enqueues)
            return []
        found = [state for state in (states.get(queue) for queue in queues) if state is not None]
        now = time.monotonic()
        for state in found:
            with state.cond:
                # A count older than the memory is of notifications that never came (the listener
                # was away): forget it.
                state.local = 1 if now - state.local_at > _LOCAL_NOTIFY_MEMORY else state.local + 1
                state.local_at = now
        return found

    def undo(self, states: list[_QueueState]) -> None:
        """An enqueue counted by ``enqueued`` stored nothing: no notification comes."""
        for state in states:
            with state.cond:
                state.local = max(0, state.local - 1)

    def notified(self, queue: str) -> None:
        """The listener got ``q:<queue>``: signal the queue, unless an enqueue of this process did."""
        state = self._states.get(queue)
        if state is None:
            return  # nothing of this process claims the queue
        with state.cond:
            if state.local > 0 and time.monotonic() - state.local_at <= _LOCAL_NOTIFY_MEMORY:
                state.local -= 1
                return
            state.local = 0
        self._signal((queue,))
