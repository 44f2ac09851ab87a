"""Where the memory backend's jobs wait: per queue, a ``queue.Queue`` of due jobs and a heap of future ones.

An *entry* is ``(-priority, run_after timestamp, sequence, version)``: one scheduling of one job,
ordered as claims take due jobs, by priority (higher first), ``run_after``, then id (the sequence is
the job's id as a number). The future heap orders the same entries by ``run_after`` alone.
Entries are never taken out of the middle of either place: cancelling, retrying or rescheduling a
job bumps its record's version, and the entry of the old version, no longer live (see
``MemoryBackend._live``), is skipped when it comes up.
"""

from __future__ import annotations

import collections
import math
import queue
import sys
from collections.abc import Iterable
from heapq import heappop, heappush
from typing import Any

__all__ = ["DueQueue", "Entry", "QueueJobs"]

#: One scheduling of a job: (minus its priority, run_after as a POSIX timestamp, the job's sequence
#: number, the record's version).
Entry = tuple[int, float, int, int]


#: Whether a take may pop the deque without the queue's mutex: only when a GIL makes
#: ``deque.popleft`` and ``dict.pop`` single steps that no other thread interleaves with.
LOCK_FREE: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class DueQueue(queue.Queue):  # type: ignore[type-arg]  # queue.Queue is generic only in typeshed
    """The due jobs of one queue in claim order (priority, ``run_after``, id): a ``queue.Queue`` kept sorted.

    Like ``queue.PriorityQueue`` it changes only where items are kept (``_init``, ``_put``,
    ``_get``, ``_qsize``): entries that arrive in order (jobs of one priority enqueued due now, nearly
    all of them) are appended to a deque, so taking one is a ``popleft``; the others (a ``run_after`` in
    the past, a future job that came due behind fresh ones, a clock that went back) go to a heap,
    and a take compares the two heads. The store never blocks on this queue (``neoq.waiting``
    does the waiting), so it puts a batch with one turn of the mutex (``put_many``) and takes
    with ``take_live`` instead of ``put``/``get``'s condition notifications.

    **While the heap is empty, a take pops the deque without the mutex** (``LOCK_FREE``). Ten claim
    loops taking the mutex once per job form a lock convoy: a thread switched out while it holds
    the mutex makes the others sleep on it, and from then on every release wakes a sleeping thread
    (docs/performance.md: the mutex halved throughput). ``popleft`` is one atomic step, and the
    deque stays sorted whatever is popped from its head, so the only care needed is in the
    mutex's holders, which may see the deque's head go meanwhile: ``_put`` may find it empty, and
    a take that compared the deque's head with the heap's keeps what it popped only if it is the
    head it compared (else the entry goes to the heap, where it keeps its order, and it looks
    again). Entries the heap holds are taken under the mutex only.
    """

    def _init(self, maxsize: int) -> None:
        self.fifo: collections.deque[Entry] = collections.deque()
        self.heap: list[Entry] = []

    def _qsize(self) -> int:
        return len(self.fifo) + len(self.heap)

    def _put(self, entry: Entry) -> None:
        fifo = self.fifo
        try:
            in_order = fifo[-1] < entry
        except IndexError:  # empty (a take without the mutex may have just emptied it)
            in_order = True
        if in_order:
            fifo.append(entry)
        else:
            heappush(self.heap, entry)

    def _get(self) -> Entry:
        entry = self._take_locked()
        if entry is None:
            raise IndexError("take from an empty DueQueue")
        return entry

    def _take_locked(self) -> Entry | None:
        # The mutex held: the first entry of the two places, or None.
        fifo, heap = self.fifo, self.heap
        while True:
            try:
                first = fifo[0]
            except IndexError:
                return heappop(heap) if heap else None
            if heap and heap[0] < first:
                return heappop(heap)
            try:
                entry = fifo.popleft()
            except IndexError:
                continue  # emptied by a take without the mutex
            if entry is first:
                return entry
            heappush(heap, entry)  # ``first`` went to a take without the mutex: compare again

    def put_entry(self, entry: Entry) -> None:
        """Put one entry: ``put_many`` of one, without the list (never blocks)."""
        with self.mutex:
            self._put(entry)

    def put_many(self, entries: Iterable[Entry]) -> None:
        """Put ``entries`` (never blocks: the queue has no size limit)."""
        with self.mutex:
            for entry in entries:
                self._put(entry)

    def take_live(self, live: dict[Entry, Any]) -> Any:
        """Take the first entry that ``live`` holds, without waiting: what ``live`` mapped it to, or
        ``None`` when no such entry waits (``left`` then says how many entries remain).

        The entry is popped from ``live`` too (one atomic ``dict.pop``), and whoever pops it owns what
        it stands for; entries that ``live`` no longer holds are stale, and dropped.
        """
        fifo, heap = self.fifo, self.heap
        if LOCK_FREE:
            while not heap:  # the common take: no mutex (see the class docstring)
                try:
                    entry = fifo.popleft()
                except IndexError:
                    if heap:
                        break
                    return None
                value = live.pop(entry, None)
                if value is not None:
                    return value
        with self.mutex:
            while True:
                first = self._take_locked()
                if first is None:
                    return None
                value = live.pop(first, None)
                if value is not None:
                    return value

    def left(self) -> int:
        """How many entries wait (stale ones too), read without the mutex: a hint."""
        return len(self.fifo) + len(self.heap)


class QueueJobs:
    """The jobs of one queue that wait: ``due`` (thread-safe) and ``future``, a heap guarded by the store's lock."""

    __slots__ = ("due", "future")

    def __init__(self) -> None:
        self.due = DueQueue()
        #: Future jobs and retries as (run_after, entry), a heap: moved to ``due`` by the look that
        #: finds them due.
        self.future: list[tuple[float, Entry]] = []

    def push_future(self, entry: Entry) -> None:
        """Keep a job that is not due yet (called with the store's lock held)."""
        heappush(self.future, (entry[1], entry))

    def move_due(self, now: float) -> bool:
        """Move the future entries due at ``now`` to ``due``; whether any moved (the store's lock held)."""
        future = self.future
        moved = []
        while future and future[0][0] <= now:
            moved.append(heappop(future)[1])
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
