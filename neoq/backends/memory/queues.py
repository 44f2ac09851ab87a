"""Where the memory backend's jobs wait: per queue, a ``queue.Queue`` of due jobs and a heap of future ones.

An *entry* is ``(run_after timestamp, sequence, version)``: one scheduling of one job, ordered by
``run_after`` then id (the sequence is the job's id as a number). Entries are never taken out of the
middle of either place: cancelling, retrying or rescheduling a job bumps its record's version, and
the entry of the old version, no longer live (see ``MemoryBackend._live``), is skipped when it
comes up.
"""

from __future__ import annotations

import collections
import math
import queue
from collections.abc import Iterable
from heapq import heappop, heappush
from typing import Any

__all__ = ["DueQueue", "Entry", "QueueJobs"]

#: One scheduling of a job: (run_after as a POSIX timestamp, the job's sequence number, the record's version).
Entry = tuple[float, int, int]


class DueQueue(queue.Queue):  # type: ignore[type-arg]  # queue.Queue is generic only in typeshed
    """The due jobs of one queue, in order of ``run_after`` then id: a ``queue.Queue`` that keeps them sorted.

    Like ``queue.PriorityQueue`` it changes only where items are kept (``_init``, ``_put``,
    ``_get``, ``_qsize``): entries that arrive in order (jobs enqueued due now, nearly all of
    them) are appended to a deque, so taking one is a ``popleft``; the others (a ``run_after`` in
    the past, a future job that came due behind fresh ones, a clock that went back) go to a heap,
    and a take compares the two heads. The store never blocks on this queue (``neoq.waiting``
    does the waiting), so it puts a batch and takes one entry with one turn of the queue's mutex
    each (``put_many``, ``take``) instead of ``put``/``get``'s condition notifications.
    """

    def _init(self, maxsize: int) -> None:
        self.fifo: collections.deque[Entry] = collections.deque()
        self.heap: list[Entry] = []

    def _qsize(self) -> int:
        return len(self.fifo) + len(self.heap)

    def _put(self, entry: Entry) -> None:
        fifo = self.fifo
        if not fifo or fifo[-1] < entry:
            fifo.append(entry)
        else:
            heappush(self.heap, entry)

    def _get(self) -> Entry:
        fifo, heap = self.fifo, self.heap
        if heap and (not fifo or heap[0] < fifo[0]):
            return heappop(heap)
        return fifo.popleft()

    def put_many(self, entries: Iterable[Entry]) -> None:
        """Put ``entries`` (never blocks: the queue has no size limit)."""
        with self.mutex:
            for entry in entries:
                self._put(entry)

    def take_live(self, live: dict[Entry, Any]) -> tuple[Any, int]:
        """Take the first entry that ``live`` holds, without waiting: what ``live`` mapped it to (``None``
        when no such entry waits), and how many entries remain.

        The entry is popped from ``live`` too (one atomic ``dict.pop``), and whoever pops it owns what
        it stands for; entries that ``live`` no longer holds are stale, and dropped.
        """
        with self.mutex:  # ``_get`` and ``_qsize`` written out: this is every claim's path
            fifo, heap = self.fifo, self.heap
            while True:
                if heap and (not fifo or heap[0] < fifo[0]):
                    entry = heappop(heap)
                elif fifo:
                    entry = fifo.popleft()
                else:
                    return None, 0
                value = live.pop(entry, None)
                if value is not None:
                    return value, len(fifo) + len(heap)


class QueueJobs:
    """The jobs of one queue that wait: ``due`` (thread-safe) and ``future``, a heap guarded by the store's lock."""

    __slots__ = ("due", "future")

    def __init__(self) -> None:
        self.due = DueQueue()
        #: Future jobs and retries, by (run_after, id): moved to ``due`` by the look that finds them due.
        self.future: list[Entry] = []

    def push_future(self, entry: Entry) -> None:
        """Keep a job that is not due yet (called with the store's lock held)."""
        heappush(self.future, entry)

    def move_due(self, now: float) -> bool:
        """Move the future entries due at ``now`` to ``due``; whether any moved (the store's lock held)."""
        future = self.future
        moved = []
        while future and future[0][0] <= now:
            moved.append(heappop(future))
        if moved:
            self.due.put_many(moved)
        return bool(moved)

    def due_in(self, now: float) -> float | None:
        """Seconds from ``now`` until the next future entry (``None``: none); the store's lock held."""
        future = self.future
        return max(0.0, future[0][0] - now) if future else None

    def next_due(self) -> float:
        """The next future entry's timestamp (``math.inf``: none), read without the lock (a hint)."""
        try:
            return self.future[0][0]
        except IndexError:
            return math.inf
