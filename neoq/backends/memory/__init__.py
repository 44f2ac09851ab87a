"""The in-memory backend: the embedded default, private to one client, and neoq's reference store.

Per queue, due jobs wait in a ``queue.Queue`` (kept in claim order: priority, ``run_after``,
then id; ``queues.DueQueue``) and future jobs and retries in a heap ordered by ``run_after``, moved to the due
queue by the look that finds them due: no timer thread, no polling tick. Every entry carries its
job's version; cancelling, retrying or rescheduling a job bumps the version, and the stale entry is
skipped when it comes up instead of being removed from the middle of a queue or heap.

The store never waits. Claims go through ``neoq.waiting`` (``Backend.claim``'s default): the store
answers one non-blocking ``look`` (a claim, or when the queue's next future job comes due) and tells
the waiting when a job became due (``signal``) or will be (``due``). The settle of an attempt takes
the loop's next job itself when no future job can have come due (a look that answers ``more``, which
the waiting would neither keep nor pass on), else it looks through ``QueueWaiting.chain``.

The busy loop's step takes no lock (ten loops on one lock are a convoy, see docs/performance.md): a
claim takes the store's lock only to move future jobs that came due, and the due queue's mutex only
when out-of-order entries wait (``queues.DueQueue``); which claim or cancellation gets a job is
decided by who pops the job's live entry (``MemoryBackend._live``), one atomic ``dict.pop``. The
settle of a processed job is a few assignments in an order the locked readers tolerate. A claimed
job stays ``NEW`` in its record, with ``claimed`` set: readers report it ``RUNNING``.

Modules: ``queues`` (where jobs wait), ``records`` (stored jobs and the copies readers get),
``backend`` (``MemoryBackend``), and its mixins ``flow`` (pauses, global and rate limits, unique_for:
docs/flow-control.md) and ``upkeep`` (cron ticks, retention).
"""

from __future__ import annotations

from .backend import MemoryBackend

__all__ = ["MemoryBackend"]
