"""The waiting of every queue of one client in one process, by queue name."""

from __future__ import annotations

import threading

from ..clock import SYSTEM_CLOCK, Clock
from ..defaults import DEFAULT_POLL_INTERVAL
from .policy import HELD_POLL, QueueWaiting

__all__ = ["Waiting"]


class Waiting:
    """The ``QueueWaiting`` of every queue of one client in one process, made on first claim.

    The store calls ``signal``, ``due`` and (at shutdown, through the runtime) ``wakeup`` by queue
    name; a queue without claims in this process has nothing to wake, and no state is made for it.
    After ``os.fork()`` the child needs a new ``Waiting`` (the parent's threads did not come along).
    """

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        notify: bool = True,
        held_poll: float = HELD_POLL,
    ) -> None:
        self._clock = clock
        self._poll_interval = poll_interval
        self._notify = notify
        self._held_poll = held_poll
        self._lock = threading.Lock()
        self._queues: dict[str, QueueWaiting] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"Waiting(queues={sorted(self._queues)!r})"

    def queue(self, name: str) -> QueueWaiting:
        """The waiting of queue ``name`` (made now if it has none yet)."""
        waiting = self._queues.get(name)
        if waiting is None:
            with self._lock:
                waiting = self._queues.get(name)
                if waiting is None:
                    waiting = QueueWaiting(
                        name,
                        clock=self._clock,
                        poll_interval=self._poll_interval,
                        notify=self._notify,
                        held_poll=self._held_poll,
                    )
                    if self._closed:
                        waiting.close()
                    self._queues[name] = waiting
        return waiting

    def signal(self, queue: str | None = None) -> None:
        """``QueueWaiting.signal`` of ``queue``; of every queue when ``None`` (a reconnect).

        A queue without claims in this process costs one dict lookup (every local enqueue signals).
        """
        if queue is not None:
            waiting = self._queues.get(queue)
            if waiting is not None:
                waiting.signal()
            return
        for waiting in self._some(None):
            waiting.signal()

    def due(self, queue: str, delay: float) -> None:
        """``QueueWaiting.due`` of ``queue``, if it has claims in this process."""
        waiting = self._queues.get(queue)
        if waiting is not None:
            waiting.due(delay)

    def wakeup(self, queue: str, waiters: int) -> None:
        """``QueueWaiting.wakeup`` of ``queue``, if it has claims in this process."""
        waiting = self._queues.get(queue)
        if waiting is not None:
            waiting.wakeup(waiters)

    def close(self) -> None:
        """Close every queue's waiting, and those made later. Idempotent."""
        with self._lock:
            self._closed = True
            queues = list(self._queues.values())
        for waiting in queues:
            waiting.close()

    def _some(self, queue: str | None) -> list[QueueWaiting]:
        if queue is None:
            with self._lock:
                return list(self._queues.values())
        waiting = self._queues.get(queue)
        return [] if waiting is None else [waiting]
