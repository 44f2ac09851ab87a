"""The memory backend's flow control (docs/flow-control.md): a mixin of ``MemoryBackend``.

A queue that is paused, or whose handler has a ``global_limit`` or a ``rate_limit``, is *gated*:
its claims and settles leave the busy loop's lock-free step for the steps below, under the
store's lock. The job a look took is checked here before it is claimed: a paused queue, or one
at its global limit, gives it back where it was and answers "nothing due" (resume, or the settle
that frees a slot, signals the queue); a rate limit whose window is full answers when it has room
again. A job of a key whose window is full (``RateLimit(key=...)``) is put off until then (its
``run_after`` moves), and the look takes the next job. No attempt is counted for a job held back.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...errors import DuplicateJobError
from ...job import Job, evolve
from ...uniqueness import unique_seconds
from ...waiting import Look

if TYPE_CHECKING:
    from ...flow import RateLimit
    from ...handler import Handler
    from ...waiting import Waiting
    from ..base import Claim, Outcome
    from .queues import QueueJobs
    from .records import Record

__all__ = ["MemoryFlow"]

logger = logging.getLogger(__name__)

#: The answer of a look at a gated queue that must wait for a signal (a resume, a freed slot).
_WAIT: Look[Any] = Look(due_in=None)


class _Limits:
    """The limits of one queue: who holds its slots, and its rate windows by key."""

    __slots__ = ("global_limit", "holders", "rate", "windows")

    def __init__(self, global_limit: int | None, rate: RateLimit | None) -> None:
        self.global_limit = global_limit
        #: The ids of the claimed jobs that hold a slot.
        self.holders: set[str] = set()
        self.rate = rate
        #: The start times (POSIX seconds) in each key's window, oldest first.
        self.windows: dict[str, collections.deque[float]] = {}


class MemoryFlow:
    """Pausing and limits for ``MemoryBackend`` (its state, under its lock)."""

    _lock: threading.Lock
    _live: dict[Any, Record]
    waiting: Waiting
    _settle: Callable[[Claim, Outcome, datetime], None]
    _schedule: Callable[..., None]
    _now: Callable[[], datetime]

    def _flow_init(self) -> None:
        #: (queue, fingerprint) -> (POSIX time, job id) of its last enqueue with a ``unique_for``.
        self._windows: dict[tuple[str, str], tuple[float, str]] = {}
        self._paused: set[str] = set()
        self._limits: dict[str, _Limits] = {}
        #: Paused queues and queues with limits: what the hot paths check, one set lookup.
        self._gated: set[str] = set()

    # -- unique for a period (the store's lock held) --------------------------------------

    def _check_windows(self, jobs: Sequence[Job], now: float) -> None:
        """Raise ``DuplicateJobError`` if a job of ``jobs`` falls in the ``unique_for`` of an earlier enqueue."""
        for index, job in enumerate(jobs):
            if job.unique_for is None:
                continue
            window = unique_seconds(job)
            last = self._windows.get((job.queue, job.fingerprint or ""))
            if last is not None and last[0] > now - window:
                raise DuplicateJobError(
                    f"job {index} of queue {job.queue!r} was enqueued as job {last[1]} {now - last[0]:.3g}s ago, "
                    f"within its unique_for of {window:g}s",
                    last[1],
                )

    def _open_windows(self, jobs: Sequence[Job], ids: Sequence[str], now: float) -> None:
        for job, job_id in zip(jobs, ids, strict=True):
            if job.unique_for is not None:
                self._windows[(job.queue, job.fingerprint or "")] = (now, job_id)

    # -- pausing -------------------------------------------------------------------------

    def pause_queue(self, queue: str) -> None:
        # From here every look at the queue gives back the job it took (see ``_gated_take``).
        with self._lock:
            self._paused.add(queue)
            self._gated.add(queue)

    def resume_queue(self, queue: str) -> None:
        with self._lock:
            paused = queue in self._paused
            self._paused.discard(queue)
            if queue not in self._limits:
                self._gated.discard(queue)
        if paused:
            self.waiting.signal(queue)

    def paused_queues(self) -> set[str]:
        with self._lock:
            return set(self._paused)

    # -- limits --------------------------------------------------------------------------

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        super().prepare_queue(queue, handler)  # type: ignore[misc]  # Backend's: the modes
        if handler.global_limit is None and handler.rate_limit is None:
            return
        limits = _Limits(handler.global_limit, handler.rate_limit)
        with self._lock:
            earlier = self._limits.get(queue)
            if earlier is not None:  # drain() again: the same claims, the same windows
                limits.holders, limits.windows = earlier.holders, earlier.windows
            self._limits[queue] = limits
            self._gated.add(queue)

    def _gated_take(self, queue: str, jobs: QueueJobs, taken: Record, now: datetime) -> tuple[Record | None, Look[Any]]:
        """The job ``taken`` (by a look, not claimed yet) checked against the queue's pause and
        limits: ``(record, _)`` to claim it, else ``(None, answer)`` with the job given back."""
        record: Record | None = taken
        while record is not None:
            limits = self._limits.get(queue)
            rate = None if limits is None else limits.rate
            key = "" if rate is None or rate.key is None else self._key(rate, record)
            with self._lock:
                if queue in self._paused or (
                    limits is not None
                    and limits.global_limit is not None
                    and len(limits.holders) >= limits.global_limit
                ):
                    self._give_back(jobs, record)
                    return None, _WAIT
                if limits is None:
                    return record, _WAIT
                if rate is not None:
                    wait = self._window_wait(limits, rate, key, now.timestamp())
                    if wait > 0:
                        if rate.key is None:
                            self._give_back(jobs, record)
                            return None, Look(due_in=wait)
                        self._put_off(record, now, wait)  # this key waits; the next job may not
                        record = None
                if record is not None:
                    if limits.global_limit is not None:
                        limits.holders.add(record.job.id or "")
                    return record, _WAIT
            record = jobs.due.take_live(self._live)
        with self._lock:
            return None, Look(due_in=jobs.due_in(now.timestamp()))

    @staticmethod
    def _key(rate: RateLimit, record: Record) -> str:
        try:
            return rate.key_of(record.job)
        except Exception:
            logger.exception("neoq: the rate limit's key raised for job %s; it counts under the key ''", record.job.id)
            return ""

    @staticmethod
    def _window_wait(limits: _Limits, rate: RateLimit, key: str, now: float) -> float:
        """Seconds until the window of ``key`` has room (0: it has, and the start at ``now`` is counted)."""
        window = limits.windows.get(key)
        if window is None:
            window = limits.windows[key] = collections.deque()
        while window and window[0] <= now - rate.per:
            window.popleft()
        if len(window) >= rate.count:
            return window[0] + rate.per - now
        window.append(now)
        return 0.0

    def _give_back(self, jobs: QueueJobs, record: Record) -> None:
        # Nothing of the record changed: its entry is live again, where it was in the order.
        entry = record.entry
        self._live[entry] = record
        jobs.due.put_entry(entry)  # type: ignore[arg-type]

    def _put_off(self, record: Record, now: datetime, wait: float) -> None:
        record.version += 1  # its old entry is stale
        record.job = evolve(record.job, run_after=now + timedelta(seconds=wait))
        self._schedule(record, now, {})

    def _settle_gated(self, claim: Claim, outcome: Outcome) -> None:
        """``settle`` of a gated queue's claim: stored, then its slot freed (which wakes a held-back look)."""
        self._settle(claim, outcome, self._now())
        job = claim.job
        limits = self._limits.get(job.queue)
        if limits is None or limits.global_limit is None:
            return
        with self._lock:
            freed = job.id in limits.holders
            limits.holders.discard(job.id or "")
        if freed:
            self.waiting.signal(job.queue)

    def _gated_then_claim(
        self, claim: Claim, outcome: Outcome, queue: str, look: Callable[[], Look[Claim]]
    ) -> Claim | None:
        self._settle_gated(claim, outcome)
        return self.waiting.queue(queue).chain(look)
