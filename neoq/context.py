"""What a running handler can learn about its attempt: ``current_job()`` and ``job_context()``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from .job import Job
from .outcomes import check_progress

__all__ = ["JobContext", "current_job", "job_context"]

_local = threading.local()
_cancelled_lock = threading.Lock()


class _LazyDeadline:
    """Given as ``JobContext(deadline=...)``: the attempt's wall-clock end is computed on first read."""

    __slots__ = ()


#: The runtime passes this (with ``now``) instead of a datetime; most attempts never read it.
LAZY_DEADLINE: Final = _LazyDeadline()


class JobContext:
    """The attempt the current thread is running.

    ``cancelled`` is set when the attempt is ended from outside: at its timeout or deadline, by
    ``cancel_job``, or at a forced shutdown. A long handler should check it (or wait on it)
    and return early; neoq cannot stop a thread.
    """

    __slots__ = ("_cancelled", "_deadline", "_ends_at", "_monotonic", "_now", "job", "transaction")

    def __init__(
        self,
        job: Job,
        deadline: datetime | _LazyDeadline | None,
        ends_at: float,
        transaction: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        #: The job being run.
        self.job: Job = job
        self._deadline = deadline
        self._now = now  # with LAZY_DEADLINE: the wall clock that ``deadline`` is worked out from
        self._cancelled: threading.Event | None = None  # made on first use: most attempts never look
        #: PostgreSQL: the ``psycopg.Connection`` of the job's transaction; ``None`` elsewhere.
        self.transaction: Any = transaction
        self._ends_at = ends_at  # monotonic seconds; inf when the attempt has no end
        self._monotonic = monotonic

    @property
    def deadline(self) -> datetime | None:
        """When this attempt ends (aware UTC): ``min(start + timeout, job.deadline)``; ``None`` if never."""
        deadline = self._deadline
        if isinstance(deadline, _LazyDeadline):
            now = self._now or _utcnow
            # The wall-clock moment ``_ends_at`` (monotonic) stands for, fixed at the first read.
            deadline = self._deadline = now() + timedelta(seconds=self._ends_at - self._monotonic())
        return deadline

    @property
    def cancelled(self) -> threading.Event:
        """Set when this attempt is ended from outside; the handler should stop."""
        event = self._cancelled
        if event is None:
            with _cancelled_lock:  # the handler and the watchdog may ask at the same moment
                event = self._cancelled
                if event is None:
                    event = self._cancelled = threading.Event()
        return event

    def time_remaining(self) -> float:
        """Return the seconds left before this attempt ends, never negative (``inf`` if no end)."""
        return max(0.0, self._ends_at - self._monotonic())

    def progress(self, fraction: float, note: str | None = None) -> None:
        """Report how far the handler got: ``fraction`` from 0.0 to 1.0, and an optional short note.

        Shown as ``Job.progress`` and ``Job.progress_note`` to every process within a second. Call
        it as often as is convenient: neoq writes the latest report a few times a second at most,
        from its own thread, so a report never waits for the store. A fraction outside 0.0-1.0 (or
        not a number), or a note that is not a str or longer than 1000 characters, raises
        ``InvalidProgressError``.
        """
        value, text = check_progress(fraction, note)
        self._report(value, text)

    def _report(self, fraction: float, note: str | None) -> None:
        """Where a checked report goes; the runtime's attempts write it to the store (a bare context drops it)."""

    def __repr__(self) -> str:
        return f"<JobContext job={self.job.id} queue={self.job.queue!r} cancelled={self.cancelled.is_set()}>"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def job_context() -> JobContext | None:
    """Return the ``JobContext`` of the job this thread is running, or ``None`` outside a handler."""
    return getattr(_local, "context", None)


def current_job() -> Job | None:
    """Return the job this thread is running, or ``None`` outside a handler."""
    context: JobContext | None = getattr(_local, "context", None)
    return None if context is None else context.job


def _set_context(context: JobContext | None) -> None:
    _local.context = context
