"""The backend contract: what a store must do for the neoq runtime.

A backend stores, claims and settles jobs. Everything else (retry policy, timeouts, deadlines,
concurrency, cron, shutdown) lives once in the runtime (``neoq.worker``), so a backend is a few
hundred lines that pass the behaviour suite in ``neoq.testing``.

The life of a job as a backend sees it::

    enqueue ──► NEW (waiting; due once run_after <= now)
                 │ claim()                            ▲ settle(NEW + run_after): a retry
                 ▼                                    │
              RUNNING (claimed: one owner at a time) ─┼─► settle(PROCESSED | FAILED | CANCELLED),
                 │ the owner's process dies               finished_at = when the settle ran
                 └── NEW again, claimable (attempts counted), at once or after the store notices

A backend may store a running job as ``NEW`` and tell ``RUNNING`` from its claim's hold when it
reads it, so that the claim writes nothing more (memory: the record's claimed flag; PostgreSQL:
the claim's row lock, or a live lease); whatever it stores, every read (``get_job``,
``list_jobs``, ``stats``) reports ``RUNNING`` for a job whose attempt is in progress.

What a store offers beyond this contract (a transaction for handlers, enqueue in the caller's
transaction, sharing between processes, notifications) it declares in ``capabilities``, with the
names of ``neoq.backends.capabilities``; the handler modes it serves in ``handler_modes``. A
backend is found by its URL's scheme (``neoq.backends.registry``) and built by ``from_url``.

Threads: every method may be called from any thread, concurrently, after ``open()``.
Times: the backend keeps aware UTC datetimes and compares ``run_after`` with its own clock
(PostgreSQL: the database's ``now()``; memory: the ``Clock`` it was given).
Errors: a backend raises only ``NeoqError`` subclasses; driver errors are wrapped in
``BackendError`` (``BackendConnectionError`` when the store cannot be reached).
"""

from __future__ import annotations

import abc
import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..clock import SYSTEM_CLOCK
from ..defaults import DEFAULT_POLL_INTERVAL
from ..errors import ConfigurationError
from ..job import Job, JobStatus
from ..waiting import Look, Waiting
from .flowbase import FlowStore

if TYPE_CHECKING:
    from ..clock import Clock
    from ..handler import Handler

__all__ = ["Backend", "Claim", "Outcome"]


@dataclass(eq=False)
class Claim:
    """One attempt's hold on one job, from ``Backend.claim`` until ``release``: no other claim on it, anywhere."""

    #: The job as claimed: status ``RUNNING``, ``attempts`` counting this attempt, ``ran_at`` now.
    job: Job
    #: The store transaction the handler may use (a DB-API connection: capability ``"transaction"``), else ``None``.
    transaction: Any = None
    #: Backend-private state (a connection, a version number, ...). The runtime never reads it.
    token: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the runtime decided it; ``Backend.settle`` stores it.

    ``status`` is ``PROCESSED``; ``NEW`` for a retry (with ``run_after`` and ``retries`` set);
    ``FAILED``; or ``CANCELLED``. ``error`` and ``traceback`` are ``None`` for ``PROCESSED``.
    """

    #: The status to store.
    status: JobStatus
    #: ``"<ExceptionClass>: <message>"`` of the failure, or ``None``.
    error: str | None = None
    #: For a retry: when it becomes due (aware UTC).
    run_after: datetime | None = None
    #: For a retry: the job's new ``retries`` value.
    retries: int | None = None
    #: ``PROCESSED``: the JSON text of the handler's return value (``None``: it returned ``None``).
    result: str | None = None
    #: The failure's traceback; ``None`` clears it, or, with the job's own ``error`` unchanged (a
    #: cancellation, a put-back), may keep it.
    traceback: str | None = None
    #: ``NEW`` from ``raise neoq.Snooze``: the store adds one to ``Job.snoozes`` (capability ``"snooze"``).
    snoozed: bool = False


#: Called by a backend with a job id when ``cancel_job`` targets a job claimed in this process.
CancelCallback = Callable[[str], None]

#: ``prepare(job, index)`` for ``Backend.enqueue_prepared``: the ``index``-th job of a batch
#: validated (``neoq.job.prepare_job``) and its payload's JSON text; ``InvalidJobError`` names ``index``.
PrepareJob = Callable[[object, int], tuple[Job, str]]


class Backend(abc.ABC, FlowStore):
    """Base class of every neoq backend; subclass it to add a store.

    Subclasses implement the abstract methods; the others have working defaults. Check a
    subclass with the behaviour suite: ``neoq.testing.BackendSuite``.
    """

    _cancel_callback: CancelCallback | None = None

    #: The handler modes (``Handler.mode``) this backend serves: ``"transaction"``, the mode of
    #: every backend (one attempt at a time holds the job, as the store allows), and, where the
    #: backend offers it, ``"lease"`` (no transaction held while the handler runs).
    handler_modes: frozenset[str] = frozenset({"transaction"})

    #: Whether the runtime must call ``release`` after each attempt. A backend whose claims hold
    #: nothing to free (no connection, no lock) may set it False to save the call.
    needs_release: bool = True

    @property
    def capabilities(self) -> frozenset[str]:
        """What the store offers beyond the core contract, as configured (default: nothing).

        Names from ``neoq.backends.capabilities``: ``"transaction"``, ``"enqueue_in_transaction"``,
        ``"shared"``, ``"notify"``; a backend may add names of its own. The runtime, the CLI, the
        integrations and the test suites decide by these, never by the backend's class. A subclass
        overrides it with a property or a class attribute.
        """
        return frozenset()

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> Backend:
        """Build the backend for ``url`` (its scheme chose this class), not opened yet.

        ``neoq.new(url, **options)``, ``NEOQ_URL`` and ``--url`` come here (``neoq.backends.registry``);
        ``clock``: where the client reads time. Raises ``ConfigurationError`` for a URL or an option
        it cannot use, never showing the password (``neoq.redact``). The default raises it.
        """
        raise ConfigurationError(
            f"{cls.__name__} cannot be built from a URL (it does not implement from_url()); "
            "construct it and pass it as neoq.new(backend=...)"
        )

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Connect and prepare the store (create or migrate its schema). Idempotent.

        ``open()`` after ``close()`` opens the backend again, over the same store.

        Called by ``neoq.new()``, so a bad URL or an unreachable store fails there: then
        ``BackendConnectionError`` within the backend's connect timeout.
        """

    def close(self) -> None:
        """Release everything the backend opened (threads, pools, connections). Idempotent.

        After it returns no thread of the backend runs and no connection of it is open,
        except connections held by claims whose handler threads were abandoned.
        """

    def migrate(self) -> list[int] | None:
        """Create or upgrade the store's schema now; return the versions applied (``[]``: it was current).

        What ``neoq migrate`` calls, on a backend that is not open; it leaves nothing open. The
        default returns ``None``: the store keeps no schema. A backend with a schema overrides it
        and ``missing_migrations``.
        """
        return None

    def missing_migrations(self) -> list[int]:
        """The schema versions the store lacks (all of them when it has no schema yet), found with reads only.

        The CLI's inspecting commands call it before ``open()`` and refuse to go on while something
        is missing, so they never change a schema. The default: ``[]``.
        """
        return []

    def set_cancel_callback(self, callback: CancelCallback | None) -> None:
        """Register the runtime's callback for cancellations of jobs claimed in this process.

        When ``cancel_job`` targets a job that is claimed (running) here or, for shared
        stores, in whichever process holds it, the backend calls ``callback(job_id)`` in the
        holding process, from any thread, without holding its own locks. The runtime then
        settles the claim as ``CANCELLED``.
        """
        self._cancel_callback = callback

    def _notify_cancel(self, job_id: str) -> None:
        callback = self._cancel_callback
        if callback is not None:
            callback(job_id)

    # -- producing -------------------------------------------------------------------------

    @abc.abstractmethod
    def enqueue(self, jobs: Sequence[Job], *, connection: Any = None) -> list[str]:
        """Store ``jobs`` atomically and return their ids (``str``), in order.

        The jobs were validated by ``neoq.job.prepare_job``: each has a ``fingerprint``, UTC
        datetimes (``run_after`` ``None`` means now) and a JSON-safe ``payload``. All or
        nothing: if any job has the same ``(queue, fingerprint)`` as a stored ``NEW`` or
        ``RUNNING`` job, or
        as another job of the batch, raise ``DuplicateJobError`` (with the existing job's id
        where known) and store none. Wake claimers of the jobs' queues once stored.
        ``connection``: a caller's store transaction to write through (capability
        ``"enqueue_in_transaction"``); backends without it raise ``ConfigurationError`` when it is
        not ``None``.
        """

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, *, connection: Any = None) -> list[str]:
        """Validate ``jobs`` with ``prepare`` and store them as ``enqueue`` does; return their ids, in order.

        ``prepare(job, index)`` returns the job as ``enqueue`` takes it, with its payload's JSON
        text, or raises ``InvalidJobError`` naming ``index``; it is called once per job, in batch
        order (``enqueue_many`` keeps what it returns for its hooks). The default prepares every
        job, then calls ``enqueue``. A backend may override it to prepare each job as it writes
        it, so the store works while the client prepares the rest; it must keep the rest of the
        contract: all or nothing (a job ``prepare`` refuses, or a duplicate, leaves nothing
        stored, and ``InvalidJobError`` names the first job refused), ids in order.
        """
        prepared = [prepare(job, index)[0] for index, job in enumerate(jobs)]
        return self.enqueue(prepared, connection=connection) if prepared else []

    # -- consuming -------------------------------------------------------------------------

    def prepare_queue(self, queue: str, handler: Handler) -> None:
        """Get ready to serve ``queue`` with ``handler``; called before its claim loops start.

        Called from ``start``/``drain``, so a setting the backend cannot honour fails there. The
        default accepts ``handler_modes`` (and ``None``), else raises ``ConfigurationError``.
        """
        if handler.mode is not None and handler.mode not in self.handler_modes:
            raise ConfigurationError(
                f"{type(self).__name__} does not support mode={handler.mode!r} (queue {queue!r}); "
                f"it serves {', '.join(map(repr, sorted(self.handler_modes)))}"
            )

    # -- claiming: the store looks, neoq.waiting decides who looks when ---------------------

    def look(self, queue: str) -> Look[Claim]:
        """Claim one due ``NEW`` job of ``queue`` now, without waiting; say what else the queue holds.

        The store's half of claiming (docs/waiting.md): return ``Look(claim)`` with the claim
        made, or ``Look(due_in=..., held=...)`` when nothing is due: seconds until the next job
        not yet due comes due (``None``: none scheduled) and whether others hold due jobs. With a
        claim, ``more=False`` says nothing else is due (``due_in`` is then the next due time); the
        default ``more=True`` costs a follower's look. Jobs are claimed in order of
        ``run_after`` then id. The claim increments ``attempts`` in a way that survives the
        claiming process dying, sets ``ran_at``, and excludes every other claim on the job until
        ``settle`` or the death of this process. Jobs whose deadline passed are still returned:
        the runtime settles them ``FAILED``. When a job may have become due, the store tells
        ``self.waiting`` (``signal(queue)``, ``due(queue, delay)``); it never waits itself.

        A backend implements ``look`` (and the default ``claim`` waits for it), or overrides
        ``claim`` with a wait of its own.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither look() nor claim()")

    def claim(self, queue: str, timeout: float) -> Claim | None:
        """Claim one due ``NEW`` job of ``queue``, waiting up to ``timeout`` seconds for one.

        Blocks until a job is due (woken, never by a busy poll), ``timeout`` passes or
        ``wakeup(queue)`` is called (then ``None``); ``timeout`` 0: do not wait. Otherwise as
        ``look``. The default waits through ``self.waiting`` and looks with ``look``.
        """
        return self.waiting.queue(queue).claim(functools.partial(self.look, queue), timeout)

    #: Seconds between looks at a queue when nothing signals: the safety net for a lost
    #: notification, or the poll of a store without ``"notify"``. A backend sets its own.
    poll_interval: float = DEFAULT_POLL_INTERVAL

    #: The clock ``waiting`` reads (memory: the client's clock; a server's store: the system clock).
    waiting_clock: Clock = SYSTEM_CLOCK

    _waiting: Waiting | None = None
    _waiting_lock = threading.Lock()

    @property
    def waiting(self) -> Waiting:
        """The waiting of this backend's claim loops in this process (``neoq.waiting.Waiting``).

        Made on first use with ``poll_interval``, ``waiting_clock`` and ``"notify"``; the store
        sends it its signals. ``reset_waiting`` drops it (``close()``, a forked child).
        """
        waiting = self._waiting
        if waiting is None:
            with Backend._waiting_lock:
                waiting = self._waiting
                if waiting is None:
                    waiting = Waiting(
                        clock=self.waiting_clock,
                        poll_interval=self.poll_interval,
                        notify="notify" in self.capabilities,
                    )
                    self._waiting = waiting
        return waiting

    def reset_waiting(self, *, close: bool = True) -> None:
        """Forget the waiting (a new one is made on next use); wake its claims first unless ``close=False``.

        ``close()`` calls it so that blocked claims return; a forked child calls it with
        ``close=False``, since the parent's threads did not come along.
        """
        with Backend._waiting_lock:
            waiting, self._waiting = self._waiting, None
        if waiting is not None and close:
            waiting.close()

    @abc.abstractmethod
    def settle(self, claim: Claim, outcome: Outcome) -> None:
        """Store ``outcome`` for the claimed job and end the claim's hold on it.

        ``PROCESSED`` clears ``error``; ``NEW`` makes the job due again at
        ``outcome.run_after`` with ``outcome.retries``; ``result``, ``traceback`` are stored (as
        ``Outcome`` says) and the job's progress kept; ``FAILED`` and ``CANCELLED`` are
        terminal, with ``finished_at`` the time of this call (the end of the attempt, not its
        start). With a ``"transaction"``, a failure rolls back the handler's writes first. Called once per
        claim, possibly from another thread than the handler's while the handler still runs
        (after ``interrupt``). After it returns the job's fingerprint is free again unless the
        status is ``NEW``; until then the job reads ``RUNNING``. A second call for the same claim must
        change nothing: when a settle or what follows it fails unexpectedly, the runtime settles the
        claim again as ``NEW`` (due now) so that its job is never left claimed.
        """

    def interrupt(self, claim: Claim) -> None:
        """Stop the claim's store work in progress before a settle from another thread.

        Called when the runtime ends an attempt whose handler still runs (timeout, deadline,
        cancellation, forced shutdown); a SQL store cancels the running statement. Must not
        block for long nor raise.
        """

    def progress(self, claim: Claim, fraction: float, note: str | None) -> None:
        """Store a progress report of the claim's running attempt, seen by every reader within 1 s.
        Called by the runtime's progress thread (a few times a second per claim at most) while the
        handler runs: it must not wait for the claim's own hold (a row lock) nor write where
        readers see it only after the settle; a report for a lost lease must not land. Built-in
        backends implement it; the default drops the reports.
        """

    def settle_then_claim(self, claim: Claim, outcome: Outcome, queue: str) -> Claim | None:
        """``settle(claim, outcome)``, then, if the backend can in the same step, claim a due job of ``queue``.

        The runtime's path after an attempt, when its claim loop goes on: a backend may store the
        outcome and take the queue's next due job in one step (one lock, one round trip), never
        waiting for one, and return that claim, held as ``claim`` returns it. ``None``: the claim
        loop calls ``claim`` as usual. The default settles only and returns ``None``; an override
        keeps ``settle``'s contract for ``claim`` whatever it returns (PostgreSQL: one pipeline;
        memory: its lock taken once per job instead of twice).
        """
        self.settle(claim, outcome)
        return None

    def release(self, claim: Claim) -> None:
        """Free the claim's resources (return its connection to the pool).

        Called exactly once per claim, after ``settle`` and the handler's return, from the
        handler's thread. Must not raise. Skipped when ``needs_release`` is False.
        """

    def wakeup(self, queue: str, waiters: int) -> None:
        """Make up to ``waiters`` calls of ``claim(queue, ...)`` blocked now return at once.

        Used at shutdown so worker threads stop promptly (a wake-up that finds nobody waiting may
        make a later ``claim`` return ``None`` early: harmless). The default wakes ``waiting``'s.
        """
        waiting = self._waiting
        if waiting is not None:
            waiting.wakeup(queue, waiters)

    # -- periodic jobs and retention -------------------------------------------------------

    @abc.abstractmethod
    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        """Store ``job`` for cron tick ``tick`` of schedule ``key``, once across all processes.

        Atomically: if ``(key, tick)`` was recorded before (by any process sharing the store),
        store nothing and return ``None``; else record it, store ``job`` as ``enqueue`` would
        and return its id. Whatever became of the earlier tick's job, a tick is stored once.
        A ``DuplicateJobError`` from the job itself propagates and records nothing.
        """

    @abc.abstractmethod
    def last_tick(self, key: str) -> datetime | None:
        """Return the latest tick recorded by ``enqueue_tick`` for ``key``, or ``None``."""

    @abc.abstractmethod
    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        """Delete up to ``limit`` jobs whose status is a key of ``older_than`` and whose
        ``finished_at`` is before that status's datetime; return how many.

        Only ``PROCESSED``, ``FAILED`` and ``CANCELLED`` appear as keys. Must not block claims
        for long (PostgreSQL: small batches, ``SKIP LOCKED``). Cron tick records older than
        the oldest cutoff may be deleted too, but never one younger than
        ``neoq.defaults.MIN_TICK_RETENTION`` nor a schedule's latest (``last_tick`` reads it).
        """

    # -- inspecting and managing ---------------------------------------------------------

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """Return the job with id ``job_id`` as stored now, or ``None`` if there is none."""

    @abc.abstractmethod
    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        """Return up to ``limit`` jobs, newest first, optionally of one queue and/or status.

        ``status`` as ``get_job`` reports it: ``NEW`` lists only waiting jobs, ``RUNNING`` only
        jobs whose attempt is in progress.
        """

    @abc.abstractmethod
    def retry_job(self, job_id: str) -> None:
        """Make a ``PROCESSED``, ``FAILED`` or ``CANCELLED`` job ``NEW`` and due now.

        ``retries``, ``attempts``, ``error`` and ``finished_at`` reset to 0/0/None/None. A ``NEW``
        or ``RUNNING`` job is left as it is.
        Raises ``JobNotFoundError`` for an unknown id and ``DuplicateJobError`` if another
        ``NEW`` or ``RUNNING`` job holds the same queue and fingerprint.
        """

    @abc.abstractmethod
    def cancel_job(self, job_id: str) -> None:
        """Cancel a job: a waiting one becomes ``CANCELLED`` at once and never runs.

        A claimed (running) one: tell its holder through the cancel callback (in whichever
        process holds it); the holder settles it ``CANCELLED``. A finished job is left as it is.
        Raises ``JobNotFoundError`` for an unknown id.
        """

    @abc.abstractmethod
    def stats(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {"new": n, "running": n, "processed": n, "failed": n, "cancelled": n}}``.

        Every queue that has jobs appears, with all five keys (zeros included). ``"new"`` counts
        waiting jobs only; a job whose attempt is in progress counts under ``"running"``. Keep it
        cheap on a large store: it is what dashboards and ``neoq stats`` poll.
        """


def _new_waiting_lock() -> None:
    # A forked child has one thread: a thread of the parent that held the lock did not come along,
    # and the child's first ``waiting`` or ``reset_waiting`` would wait for it forever.
    Backend._waiting_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_waiting_lock)
