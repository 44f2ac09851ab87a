"""The in-memory backend: the embedded default, private to one client, and neoq's reference store.

Per queue, due jobs wait in a ``queue.Queue`` (kept in order of ``run_after`` then id,
``queues.DueQueue``) and future jobs and retries in a heap ordered the same way, moved to the due
queue by the look that finds them due: no timer thread, no polling tick. Every entry carries its
job's version; cancelling, retrying or rescheduling a job bumps the version, and the stale entry is
skipped when it comes up instead of being removed from the middle of a queue or heap.

The store never waits. Claims go through ``neoq.waiting`` (``Backend.claim``'s default): the store
answers one non-blocking ``look`` (a claim, or when the queue's next future job comes due) and tells
the waiting when a job became due (``signal``) or will be (``due``). A claim takes the store's lock
only to move future jobs that came due; which claim or cancellation gets a job is decided by who
pops the job's live entry (``MemoryBackend._live``), one atomic ``dict.pop``. The settle of a
processed job is a few assignments in an order the locked readers tolerate. A claimed job stays
``NEW`` in its record, with ``claimed`` set: readers report it ``RUNNING``.

Modules: ``queues`` (where jobs wait), ``records`` (stored jobs and the copies readers get),
``backend`` (``MemoryBackend``).
"""

from __future__ import annotations

from .backend import MemoryBackend

__all__ = ["MemoryBackend"]
