"""The memory backend's dashboard half: search, activity, bulk actions and the worker registry.

Linear scans under the store's lock: the memory store holds what one process made, and its
readers copy as ``list_jobs`` does.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...defaults import WORKER_TTL
from ...job import Job, JobStatus
from ..search import MAX_PAGE, Activity, JobPage, JobQuery, JobSearch, QueueSummary, WorkerInfo, WorkerRegistry
from .records import Record, payload_copy, shown, status_of

if TYPE_CHECKING:
    from ...clock import Clock

__all__ = ["MemorySearch"]

_KEYS = ("new", "running", "processed", "failed", "cancelled")


def _matches(record: Record, query: JobQuery) -> bool:
    job = record.job
    if query.queue is not None and job.queue != query.queue:
        return False
    if query.status is not None and status_of(record) is not query.status:
        return False
    created = job.created_at
    if query.since is not None and (created is None or created < query.since):
        return False
    if query.until is not None and (created is None or created >= query.until):
        return False
    if query.text:
        needle = query.text.casefold()
        text = record.payload_text if record.payload_text is not None else json.dumps(record.flat)
        if needle not in text.casefold() and needle not in (job.error or "").casefold():
            return False
    return True


def _before(query: JobQuery) -> int | None:
    if query.before is None:
        return None
    try:
        return int(query.before)
    except ValueError:
        return 0  # no memory id: nothing comes before it


class MemorySearch(JobSearch, WorkerRegistry):
    """``JobSearch`` and ``WorkerRegistry`` over ``MemoryBackend``'s records (a mixin of it)."""

    _lock: threading.Lock
    _records: dict[str, Record]
    _clock: Clock
    _workers: dict[str, WorkerInfo] | None = None

    def _select(self, query: JobQuery, limit: int) -> list[tuple[Job, Record]]:
        before = _before(query)
        found: list[tuple[Job, Record]] = []
        with self._lock:
            for record in reversed(list(self._records.values())):
                if before is not None and record.seq >= before:
                    continue
                if _matches(record, query):
                    found.append((shown(record), record))  # copied under the lock, as list_jobs does
                    if len(found) >= limit:
                        break
        return found

    def search_jobs(self, query: JobQuery) -> JobPage:
        limit = max(1, min(query.limit, MAX_PAGE))
        found = self._select(query, limit + 1)
        jobs = []
        for job, record in found[:limit]:
            job.__dict__["payload"] = payload_copy(record.payload_text, record.flat)
            jobs.append(job)
        return JobPage(jobs, jobs[-1].id if len(found) > limit else None)

    def queue_summaries(self) -> list[QueueSummary]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, datetime] = {}
        with self._lock:
            now = self._clock.now()
            for record in self._records.values():
                job = record.job
                status = status_of(record)
                counts.setdefault(job.queue, dict.fromkeys(_KEYS, 0))[status.value] += 1
                due = job.run_after
                if status is JobStatus.NEW and due is not None and due <= now and due < oldest.get(job.queue, now):
                    oldest[job.queue] = due
        return [QueueSummary(queue, counts[queue], oldest_waiting=oldest.get(queue)) for queue in sorted(counts)]

    def activity(self, since: datetime, queue: str | None = None) -> list[Activity]:
        minutes: dict[datetime, list[int]] = {}
        with self._lock:
            for record in self._records.values():
                job = record.job
                finished = record.finished_at
                if finished is None or finished < since or (queue is not None and job.queue != queue):
                    continue
                if job.status is JobStatus.PROCESSED:
                    minutes.setdefault(finished.replace(second=0, microsecond=0), [0, 0])[0] += 1
                elif job.status is JobStatus.FAILED:
                    minutes.setdefault(finished.replace(second=0, microsecond=0), [0, 0])[1] += 1
        return [Activity(minute, p, f) for minute, (p, f) in sorted(minutes.items())]

    # -- workers ---------------------------------------------------------------------------

    def _registry(self) -> dict[str, WorkerInfo]:
        # Made on first use, under the store's lock (the caller holds it).
        if self._workers is None:
            self._workers = {}
        return self._workers

    def announce_worker(self, worker: WorkerInfo) -> None:
        with self._lock:
            registry = self._registry()
            known = registry.get(worker.id)
            started = worker.started_at or (known.started_at if known else None) or self._clock.now()
            registry[worker.id] = WorkerInfo(
                worker.id,
                worker.host,
                worker.pid,
                dict(worker.queues),
                worker.running,
                started,
                self._clock.now(),
                {queue: list(value) for queue, value in worker.schedules.items()},
            )

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._registry().pop(worker_id, None)

    def list_workers(self, ttl: float = WORKER_TTL) -> list[WorkerInfo]:
        with self._lock:
            registry = self._registry()
            floor = self._clock.now() - timedelta(seconds=ttl)
            for worker_id in [
                key for key, info in registry.items() if info.last_seen is None or info.last_seen < floor
            ]:
                del registry[worker_id]
            return sorted(registry.values(), key=lambda info: (info.started_at or floor, info.id))
