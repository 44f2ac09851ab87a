"""Hooks: callbacks a client calls as its jobs move, for metrics, tracing and error reporting.

Register them with ``Neoq.on``::

    @nq.on("failed")
    def report(event: neoq.JobEvent) -> None:
        sentry_sdk.capture_exception(event.exception)

Every hook takes one ``JobEvent``. Hooks run synchronously in the thread where the event
happens (the handler's thread for ``started`` and the outcomes, the caller's for ``enqueued``),
so keep them quick. An exception raised by a hook (any ``BaseException``, ``SystemExit``
included) is logged with its traceback and otherwise ignored: a hook never changes what happens
to a job, and never stops a worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .job import Job, JobStatus

if TYPE_CHECKING:
    from .backends.base import Outcome

__all__ = ["EVENTS", "Hook", "Hooks", "JobEvent"]

#: The event names ``Neoq.on`` accepts, in the order a job meets them.
EVENTS: tuple[str, ...] = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "finally_failed",
    "cancelled",
)


@dataclass(frozen=True)
class JobEvent:
    """What happened to a job, as given to a hook."""

    #: The event's name: one of ``neoq.hooks.EVENTS``.
    name: str
    #: The job. For outcome events its ``status``, ``error``, ``retries`` and ``run_after`` are the new ones,
    #: and ``finished_at`` is set once it is ``PROCESSED``, ``FAILED`` or ``CANCELLED``; ``started``: ``RUNNING``.
    job: Job
    #: ``failed``/``retried``/``finally_failed``: the exception the attempt ended with (the handler's, or
    #: neoq's ``JobTimeoutError``/``DeadlineExceededError``); ``None`` when the job failed without running.
    exception: BaseException | None = None
    #: Outcome events: how long the attempt ran, in seconds.
    duration: float | None = None
    #: ``retried``: when the retry becomes due (aware UTC).
    run_after: datetime | None = None


#: What a hook is: a callable taking a ``JobEvent``. Its return value is ignored.
Hook = Callable[[JobEvent], Any]


class Hooks:
    """The hooks of one client, by event name; also the worker runtime's ``events`` object.

    Registering is thread-safe and may happen while jobs run: each event name holds an
    immutable tuple that is replaced, never changed in place, so firing needs no lock.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._hooks: dict[str, tuple[Hook, ...]] = dict.fromkeys(EVENTS, ())
        #: Whether any hook is registered: the runtime checks it per attempt before anything else.
        self.active = False

    def add(self, name: str, hook: Hook) -> None:
        """Call ``hook(event)`` on each event called ``name``; raise ``ValueError`` for an unknown name."""
        if name not in self._hooks:
            raise ValueError(f"unknown hook event {name!r}; accepted: {', '.join(EVENTS)}")
        if not callable(hook):
            raise TypeError(f"a hook must be callable as hook(event), got {type(hook).__name__}")
        with self._lock:
            self._hooks[name] = (*self._hooks[name], hook)
            self.active = True

    def remove(self, name: str, hook: Hook) -> None:
        """Stop calling ``hook`` on ``name`` events (every registration of it); unknown pairs are ignored."""
        with self._lock:
            if name in self._hooks:
                self._hooks[name] = tuple(h for h in self._hooks[name] if h != hook)
                self.active = any(self._hooks.values())

    def __bool__(self) -> bool:
        return self.active

    def _fire(self, hooks: Sequence[Hook], event: JobEvent) -> None:
        for hook in hooks:
            try:
                hook(event)
            except BaseException as exc:
                # Even SystemExit: most events fire in a claim loop, which must go on. Only a
                # Ctrl-C in the main thread (an ``enqueued`` hook) is the user's, not the hook's.
                if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                    raise
                self._log.exception(
                    "neoq: %s hook %r raised for job %s (queue %r); ignored",
                    event.name,
                    hook,
                    event.job.id,
                    event.job.queue,
                )

    # -- called by the client and the worker runtime -------------------------------------

    def enqueued(self, jobs: Sequence[Job]) -> None:
        """Fire ``enqueued`` for each stored job (ids set)."""
        hooks = self._hooks["enqueued"]
        if hooks:
            for job in jobs:
                self._fire(hooks, JobEvent("enqueued", job))

    def started(self, job: Job) -> None:
        """Fire ``started`` as an attempt begins, in the handler's thread."""
        hooks = self._hooks["started"]
        if hooks:
            self._fire(hooks, JobEvent("started", job))

    def settled(self, job: Job, outcome: Outcome, duration: float, exc: BaseException | None) -> None:
        """Fire the outcome events of an attempt once its outcome is stored."""
        table = self._hooks
        status = outcome.status
        if status is JobStatus.PROCESSED:
            names: tuple[str, ...] = ("succeeded",)
        elif status is JobStatus.CANCELLED:
            names = ("cancelled",)
        elif status is JobStatus.FAILED:
            names = ("failed", "finally_failed")
        elif exc is not None:
            names = ("failed", "retried")
        else:
            # Put back as waiting by a shutdown that cut the attempt short: not a failure.
            return
        if not any(table[name] for name in names):
            return
        settled = replace(
            job,
            status=status,
            error=outcome.error,
            retries=job.retries if outcome.retries is None else outcome.retries,
            run_after=outcome.run_after or job.run_after,
            # This process's clock, just after the settle; the store's own time is in get_job().
            finished_at=None if status is JobStatus.NEW else datetime.now(timezone.utc),
        )
        for name in names:
            hooks = table[name]
            if hooks:
                run_after = outcome.run_after if name == "retried" else None
                self._fire(hooks, JobEvent(name, settled, exc, duration, run_after))
