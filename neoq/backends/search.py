"""What a dashboard asks of a store beyond the core contract: search, activity, bulk actions, workers.

A backend offers it by declaring the capabilities ``"dashboard"`` (``JobSearch``: filtered job
search paged by key, per-minute activity, the oldest waiting job, bulk retry and cancel) and
``"workers"`` (``WorkerRegistry``: each worker process announces itself, beats, and is forgotten
when it stops or stops beating), and by subclassing the matching class below. The runtime announces
its workers on every backend with ``"workers"``; ``neoq.dashboard`` reads both.

Paging is by key, never by ``OFFSET``: a page is the newest jobs whose id comes before the
previous page's last one (``JobQuery.before``). A search that would scan without an index (text in
the payload or the error) looks at a bounded window of ids per page (``JobPage.scanned_to``).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..defaults import WORKER_TTL
from ..errors import DuplicateJobError, JobNotFoundError
from ..job import Job, JobStatus

__all__ = ["Activity", "JobPage", "JobQuery", "JobSearch", "QueueSummary", "WorkerInfo", "WorkerRegistry"]

#: The most jobs one search page returns.
MAX_PAGE = 500
#: How many ids a text search looks at per page, at most (a page may then hold fewer matches).
TEXT_WINDOW = 20_000

_FINISHED = (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)
_UNFINISHED = (JobStatus.NEW, JobStatus.RUNNING)


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a search returns: every field that is set must match."""

    #: Only jobs of this queue.
    queue: str | None = None
    #: Only jobs with this status, as ``get_job`` reads it (``RUNNING`` apart from ``NEW``).
    status: JobStatus | None = None
    #: Only jobs created at or after this time (aware).
    since: datetime | None = None
    #: Only jobs created before this time (aware).
    until: datetime | None = None
    #: Only jobs whose payload's JSON text or error contains this text (case-insensitive).
    text: str | None = None
    #: Keyset paging: only jobs whose id comes before this one (the previous page's ``next``).
    before: str | None = None
    #: The most jobs to return (at most ``MAX_PAGE``).
    limit: int = 50


@dataclass(frozen=True)
class JobPage:
    """One page of a search: the jobs, newest first, and where the next page starts."""

    jobs: list[Job]
    #: The ``before`` of the next page, or ``None`` when nothing older matches.
    next: str | None = None


@dataclass(frozen=True)
class QueueSummary:
    """One queue as the overview shows it."""

    queue: str
    #: Counts by status (the five keys of ``stats()``).
    counts: dict[str, int]
    #: True when some counts are estimates (a large store counts finished jobs from statistics).
    estimated: bool = False
    #: When the oldest due waiting job became due (``None``: nothing waits).
    oldest_waiting: datetime | None = None


@dataclass(frozen=True)
class Activity:
    """Jobs that finished in one minute: ``processed`` and ``failed`` counts, by queue or all."""

    minute: datetime
    processed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker process, as it announced itself."""

    #: Unique per process and start: ``host:pid:random``.
    id: str
    host: str
    pid: int
    #: The queues it serves, with each one's concurrency.
    queues: dict[str, int] = field(default_factory=dict)
    #: Jobs running in it at its last beat.
    running: int = 0
    started_at: datetime | None = None
    last_seen: datetime | None = None
    #: Its cron schedules: queue to ``[spec, timezone]``.
    schedules: dict[str, list[str]] = field(default_factory=dict)

    @property
    def concurrency(self) -> int:
        """The sum of its queues' concurrency."""
        return sum(self.queues.values())


class JobSearch(abc.ABC):
    """The store's half of the dashboard (capability ``"dashboard"``)."""

    @abc.abstractmethod
    def search_jobs(self, query: JobQuery) -> JobPage:
        """Return the newest jobs that match ``query``, older than ``query.before``, and the next page's key."""

    @abc.abstractmethod
    def queue_summaries(self) -> list[QueueSummary]:
        """Every queue that has jobs, with counts by status and its oldest due waiting job; cheap on a large store."""

    @abc.abstractmethod
    def activity(self, since: datetime, queue: str | None = None) -> list[Activity]:
        """Jobs that became ``PROCESSED`` or ``FAILED`` at or after ``since``, per minute (empty minutes left out)."""

    if TYPE_CHECKING:  # the Backend's

        def retry_job(self, job_id: str) -> None: ...

        def cancel_job(self, job_id: str) -> None: ...

    def _each(self, query: JobQuery, statuses: tuple[JobStatus, ...], limit: int, act: str) -> int:
        done = 0
        page = dataclasses.replace(query, before=None, limit=MAX_PAGE)
        while done < limit:
            found = self.search_jobs(page)
            for job in found.jobs:
                if done >= limit or job.status not in statuses or job.id is None:
                    continue
                try:
                    self.retry_job(job.id) if act == "retry" else self.cancel_job(job.id)
                except (DuplicateJobError, JobNotFoundError):
                    continue
                done += 1
            if found.next is None:
                break
            page = dataclasses.replace(page, before=found.next)
        return done

    def bulk_retry(self, query: JobQuery, limit: int) -> int:
        """``retry_job`` up to ``limit`` finished jobs matching ``query`` (its ``before`` ignored); return how many.

        A job whose fingerprint a waiting job holds is skipped. The default goes through
        ``search_jobs`` and ``retry_job`` one job at a time.
        """
        return self._each(query, _FINISHED, limit, "retry")

    def bulk_cancel(self, query: JobQuery, limit: int) -> int:
        """``cancel_job`` up to ``limit`` waiting or running jobs matching ``query``; return how many were asked.

        The default goes through ``search_jobs`` and ``cancel_job`` one job at a time.
        """
        return self._each(query, _UNFINISHED, limit, "cancel")


class WorkerRegistry(abc.ABC):
    """Where worker processes announce themselves (capability ``"workers"``)."""

    @abc.abstractmethod
    def announce_worker(self, worker: WorkerInfo) -> None:
        """Record ``worker`` as alive now (again: its queues and running count are replaced)."""

    @abc.abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """Remove the worker (it stopped). Unknown ids are ignored."""

    @abc.abstractmethod
    def list_workers(self, ttl: float = WORKER_TTL) -> list[WorkerInfo]:
        """The workers seen within ``ttl`` seconds, oldest first; older ones are forgotten."""
