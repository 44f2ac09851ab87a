"""The memory backend's cron ticks and retention: a mixin of ``MemoryBackend``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...defaults import MIN_TICK_RETENTION
from ...job import Job, JobStatus

if TYPE_CHECKING:
    from ...clock import Clock
    from .records import Record

__all__ = ["MemoryUpkeep"]


class MemoryUpkeep:
    """``enqueue_tick``, ``last_tick`` and ``prune`` of ``MemoryBackend`` (its state, under its lock)."""

    _lock: threading.Lock
    _clock: Clock
    _records: dict[str, Record]
    _ticks: dict[str, datetime]
    _tick_set: set[tuple[str, datetime]]
    _windows: dict[tuple[str, str], tuple[float, str]]
    _store: Callable[[Sequence[Job], dict[str, float]], list[str]]
    _wake: Callable[[dict[str, float]], None]

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        wake: dict[str, float] = {}
        with self._lock:
            if (key, tick) in self._tick_set:
                return None
            job_id = self._store([job], wake)[0]
            self._tick_set.add((key, tick))
            last = self._ticks.get(key)
            if last is None or tick > last:
                self._ticks[key] = tick
        self._wake(wake)
        return job_id

    def last_tick(self, key: str) -> datetime | None:
        with self._lock:
            return self._ticks.get(key)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        deleted = 0
        with self._lock:
            for job_id, record in list(self._records.items()):
                if deleted >= limit:
                    break
                cutoff = older_than.get(record.job.status)
                if cutoff is None or record.claimed or record.finished_at is None or record.finished_at >= cutoff:
                    continue
                del self._records[job_id]
                deleted += 1
            known = [cutoff for cutoff in older_than.values() if cutoff is not None]
            if known and self._tick_set:
                floor = self._clock.now() - timedelta(seconds=MIN_TICK_RETENTION)
                oldest = min(*known, floor)
                # A schedule's latest tick stays: last_tick() reads it.
                self._tick_set = {
                    (key, tick) for key, tick in self._tick_set if tick >= oldest or self._ticks.get(key) == tick
                }
            failed = older_than.get(JobStatus.FAILED)
            if failed is not None:  # unique_for is remembered as long as failed jobs
                floor_ts = failed.timestamp()
                self._windows = {key: last for key, last in self._windows.items() if last[0] >= floor_ts}
        return deleted
