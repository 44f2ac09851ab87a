"""The client: ``neoq.new()`` and ``Neoq``, the object applications hold."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .backends.base import Backend
from .backends.registry import backend_from_url
from .clock import SYSTEM_CLOCK, Clock
from .defaults import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_RETENTION_FAILED,
    DEFAULT_RETENTION_PROCESSED,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_URL,
)
from .enqueueing import Enqueuer
from .errors import ConfigurationError, InvalidJobError
from .flowclient import QueueControl
from .handler import Handler, HandlerFunc, as_handler
from .hooks import Hook, Hooks
from .job import Job, JobStatus, setting_seconds, validate_queue_name
from .retention import Pruner
from .signals import StopSignals, wait_for_stop
from .worker import RecoveryCallback, Worker

if TYPE_CHECKING:
    from .cron import CronScheduler

__all__ = ["Neoq", "new"]

_default_logger = logging.getLogger("neoq")

_H = TypeVar("_H", bound=Hook)


def _retention(value: timedelta | float | None, name: str) -> float | None:
    return None if value is None else setting_seconds(value, name)


def new(
    url: str | None = None,
    *,
    backend: Backend | None = None,
    shutdown_timeout: timedelta | float = DEFAULT_SHUTDOWN_TIMEOUT,
    logger: logging.Logger | None = None,
    recovery_callback: RecoveryCallback | None = None,
    clock: Clock | None = None,
    retention_processed: timedelta | float | None = DEFAULT_RETENTION_PROCESSED,
    retention_failed: timedelta | float | None = DEFAULT_RETENTION_FAILED,
    **options: Any,
) -> Neoq:
    """Create a client on a backend and open it.

    ``url`` picks the backend by its scheme: ``memory://`` (the default), ``postgresql://...``
    (``postgres://`` too), or any scheme a package registers as a ``neoq.backends`` entry point
    (see ``neoq.backends.registry``). With neither ``url`` nor ``backend``, ``NEOQ_URL`` is read, else
    ``memory://``: a store private to this process, so the first ``enqueue`` into a queue this
    client does not run logs a warning, and ``neoq worker`` refuses to run on it (give
    ``memory://`` explicitly to avoid both). ``backend`` passes a ``neoq.backends.Backend``
    object instead. Other keyword ``options`` go to the URL's backend (for PostgreSQL:
    ``idle_transaction_timeout``, ``pool_min_size``, ``pool_max_size``, ``synchronous_commit``,
    ...). Raises ``ConfigurationError`` for an unknown scheme, a malformed URL, both ``url`` and
    ``backend``, or a backend whose driver is missing; ``BackendConnectionError`` when the store
    cannot be reached. No error, log line or ``repr`` shows the URL's password (``neoq.redact``).

    ``retention_processed`` (default 7 days) and ``retention_failed`` (default 30 days) are how
    long finished jobs are kept (``PROCESSED`` and ``CANCELLED``, resp. ``FAILED``) before the
    workers of this client delete them; ``None`` keeps them forever.

    ``shutdown_timeout`` (default 30 s) is the grace time of ``shutdown()``. ``logger`` receives
    one line per job outcome (default: the ``neoq`` logger). ``recovery_callback`` is called as
    ``callback(job, exc)`` when a handler raises; its own errors are logged, never raised.
    ``clock`` is where the client reads time (default: the system clock).
    """
    clock = clock or SYSTEM_CLOCK
    if url is not None and backend is not None:
        raise ConfigurationError("give neoq.new() either a url or a backend, not both")
    if backend is not None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(f"backend must be a neoq.backends.Backend instance, not {type(backend).__name__}")
        if options:
            raise ConfigurationError(
                f"backend options ({', '.join(sorted(options))}) go to the backend's own constructor "
                "when backend= is given"
            )
    implicit = False
    if backend is None:
        if url is None:
            url = os.environ.get("NEOQ_URL") or None
            implicit = url is None
        # Found by the URL's scheme among the neoq.backends entry points (neoq.backends.registry).
        backend = backend_from_url(DEFAULT_URL if url is None else url, clock=clock, **options)
    client = Neoq(
        backend,
        shutdown_timeout=shutdown_timeout,
        logger=logger,
        recovery_callback=recovery_callback,
        clock=clock,
        retention_processed=retention_processed,
        retention_failed=retention_failed,
    )
    client._implicit_memory = client._enqueuer.warn_private = implicit
    backend.open()
    return client


class Neoq(QueueControl):
    """A neoq client: enqueue jobs, run handlers, inspect and manage jobs and queues.

    Create it with ``neoq.new()``. Thread-safe. Use it as a context manager, or call
    ``shutdown()`` when done, so its threads and connections are closed.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        shutdown_timeout: timedelta | float = DEFAULT_SHUTDOWN_TIMEOUT,
        logger: logging.Logger | None = None,
        recovery_callback: RecoveryCallback | None = None,
        clock: Clock | None = None,
        retention_processed: timedelta | float | None = DEFAULT_RETENTION_PROCESSED,
        retention_failed: timedelta | float | None = DEFAULT_RETENTION_FAILED,
    ) -> None:
        if logger is not None and not isinstance(logger, logging.Logger):
            raise ConfigurationError(f"logger must be a logging.Logger, not {type(logger).__name__}")
        if recovery_callback is not None and not callable(recovery_callback):
            raise ConfigurationError("recovery_callback must be callable as callback(job, exc)")
        #: The backend this client stores jobs in; what it offers is ``backend.capabilities``.
        self.backend: Backend = backend
        #: The default grace time of ``shutdown()``, in seconds.
        self.shutdown_timeout: float = setting_seconds(shutdown_timeout, "shutdown_timeout")
        #: Where job outcome lines are logged.
        self.logger: logging.Logger = logger or _default_logger
        self._clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] = {}
        #: How long PROCESSED and CANCELLED jobs are kept, in seconds; ``None``: forever.
        self.retention_processed: float | None = _retention(retention_processed, "retention_processed")
        #: How long FAILED jobs are kept, in seconds; ``None``: forever.
        self.retention_failed: float | None = _retention(retention_failed, "retention_failed")
        self._hooks = Hooks(self.logger)
        self._worker = Worker(
            backend, clock=self._clock, log=self.logger, recovery_callback=recovery_callback, events=self._hooks
        )
        self._enqueuer = Enqueuer(backend, self._hooks, self.logger, runs=self._worker.is_started)
        # Started with the first handler (see _start_worker), so producers never prune.
        kept, failed = self.retention_processed, self.retention_failed
        self._pruner = Pruner(backend, processed=kept, failed=failed, clock=self._clock, log=self.logger)
        self._cron: CronScheduler | None = None
        self._declared_crons: dict[str, tuple[str, Any, float | None]] = {}  # queue: (spec, trigger, catch_up)
        #: Set by new() when nothing named the store: the private memory:// default, which no other
        #: process can reach. Enqueueing into it warns once; ``neoq worker`` refuses to run on it.
        self._implicit_memory = False
        self._closed = False
        self._stop_requested = threading.Event()
        self._force = threading.Event()

    def __repr__(self) -> str:
        return f"<Neoq backend={self.backend!r} queues={sorted(self._handlers)}>"

    def __enter__(self) -> Neoq:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- enqueueing ----------------------------------------------------------------------

    def enqueue(self, job: Job, *, connection: Any = None) -> str:
        """Store ``job`` and return its id.

        Raises ``InvalidJobError`` (nothing stored) for a job that cannot be stored and
        ``DuplicateJobError`` while a job with the same queue and fingerprint is ``NEW``.
        ``connection``: a DB-API connection of the store (on PostgreSQL a ``psycopg.Connection``)
        whose transaction the job is inserted in, on a backend with the ``"enqueue_in_transaction"``
        capability; it exists, and workers are woken, only when that transaction commits.
        """
        self._check_open()
        return self._enqueuer.enqueue(job, connection)

    def enqueue_many(self, jobs: Iterable[Job], *, connection: Any = None) -> list[str]:
        """Store several jobs atomically (one round trip where the backend allows); return their ids.

        The same checks as ``enqueue`` apply to each job; if any fails, none is stored.
        """
        self._check_open()
        return self._enqueuer.enqueue_many(jobs, connection)

    # -- handlers ------------------------------------------------------------------------

    def _register(self, queue: str, handler: Handler) -> None:
        if not isinstance(queue, str):
            raise ConfigurationError(f"queue must be a str, not {type(queue).__name__}")
        try:
            validate_queue_name(queue)
        except InvalidJobError as exc:
            raise ConfigurationError(str(exc)) from None
        if queue in self._handlers:
            raise ConfigurationError(f"queue {queue!r} already has a handler in this client")
        self._handlers[queue] = handler

    def start(self, queue: str, handler: Handler | HandlerFunc, **settings: Any) -> None:
        """Start processing ``queue`` now, in background threads.

        ``handler`` is a callable taking the ``Job`` or a ``Handler``; keyword ``settings``
        (``concurrency``, ``timeout``, ``max_retries``, ``backoff``) build the ``Handler``
        for a plain callable. A second handler for the same queue raises ``ConfigurationError``.
        """
        resolved = as_handler(handler, **settings)
        with self._lock:
            self._check_open()
            self._register(queue, resolved)
        try:
            self._start_worker(queue, resolved)
        except ConfigurationError:
            # The backend refused the handler (Backend.prepare_queue): leave no trace of it.
            with self._lock:
                self._handlers.pop(queue, None)
            raise

    def handler(self, queue: str, **settings: Any) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated function as ``queue``'s handler, started by ``run()``/``drain()``.

        ``settings`` are ``Handler`` settings. Returns the function unchanged.
        """

        def register(func: HandlerFunc) -> HandlerFunc:
            resolved = as_handler(func, **settings)
            with self._lock:
                self._check_open()
                self._register(queue, resolved)
            return func

        return register

    def _start_worker(self, queue: str, handler: Handler) -> None:
        self._worker.start(queue, handler)
        self._pruner.start()

    # -- hooks ---------------------------------------------------------------------------

    @overload
    def on(self, event: str) -> Callable[[_H], _H]: ...

    @overload
    def on(self, event: str, hook: _H) -> _H: ...

    def on(self, event: str, hook: Hook | None = None) -> Any:
        """Call ``hook(JobEvent)`` on each ``event``; without ``hook``, a decorator that registers one.

        ``event`` is one of ``enqueued``, ``started``, ``succeeded``, ``failed`` (every failed
        attempt, with its exception), ``retried``, ``finally_failed`` and ``cancelled``; see the
        hooks section of the deployment guide. Hooks run in the thread of the event; one that
        raises is logged and ignored. Returns ``hook`` (so the decorator leaves the function as it is).
        """

        def register(func: Hook) -> Hook:
            try:
                self._hooks.add(event, func)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(str(exc)) from None
            return func

        return register if hook is None else register(hook)

    def off(self, event: str, hook: Hook) -> None:
        """Stop calling ``hook`` on ``event``; a hook that was not registered is ignored."""
        self._hooks.remove(event, hook)

    @property
    def handlers(self) -> dict[str, Handler]:
        """The handlers of this client by queue, started or registered (a copy)."""
        return dict(self._handlers)

    def run(self, queues: Iterable[str] | None = None, *, install_signal_handlers: bool = True) -> None:
        """Start the registered handlers (of ``queues``, default all) and block until stopped.

        A first SIGINT or SIGTERM (or ``stop()``) shuts down gracefully; a second one while
        shutting down stops waiting for running attempts. Returns once the client is shut down.
        Signal handlers are installed only when called from the main thread (the policy: ``neoq.signals``).
        """
        wanted = set(self._handlers) if queues is None else set(queues)
        unknown = wanted - set(self._handlers)
        if unknown:
            raise ConfigurationError(f"no handler registered for queue(s): {', '.join(sorted(unknown))}")
        signals = StopSignals(self.stop, log=self.logger, grace=self.shutdown_timeout, exit_on_second=False)
        # Signal handlers go in before any job can start, so a signal never meets the default one.
        with signals if install_signal_handlers else nullcontext():
            with self._lock:
                self._check_open()
                for queue in sorted(wanted):
                    if not self._worker.is_started(queue):
                        self._start_worker(queue, self._handlers[queue])
            for queue in sorted(wanted & set(self._declared_crons)):  # only workers tick declared schedules
                self._schedule(queue, *self._declared_crons.pop(queue))
            wait_for_stop(self._stop_requested)
            self.shutdown()

    def stop(self) -> None:
        """Ask a blocking ``run()`` to shut down gracefully; a second call cuts the grace time short."""
        if self._stop_requested.is_set():
            self._force.set()
        self._stop_requested.set()

    def drain(self, timeout: timedelta | float | None = None) -> int:
        """Run this client's handlers until no job of their queues is due, then return.

        For tests and one-shot scripts: enqueue, ``drain()``, assert. Runs in burst threads
        that are all joined before it returns. Retries that are not due yet are left waiting.
        Queues already started with ``start()`` run in the background and are left to it.
        ``timeout`` stops claiming after that long. Returns the number of attempts run.
        """
        self._check_open()
        seconds = None if timeout is None else setting_seconds(timeout, "timeout")
        with self._lock:
            handlers = {q: h for q, h in self._handlers.items() if not self._worker.is_started(q)}
        return self._worker.drain(handlers, seconds)

    # -- periodic jobs -------------------------------------------------------------------

    def start_cron(
        self,
        spec: str,
        handler: Handler | HandlerFunc,
        *,
        queue: str | None = None,
        timezone: str = "UTC",
        catch_up: timedelta | float | None = None,
    ) -> None:
        """Run ``handler`` on a cron schedule: each tick enqueues one job, run exactly once.

        ``spec``: 5 fields (minute first), 6 fields (seconds first) or ``@hourly``-style.
        ``catch_up``: at start, also enqueue the ticks of that last stretch of time that no
        process enqueued (by default missed ticks are not run later).
        See the cron guide for the queue name, the payload and the multi-process guarantee.
        """
        from .cron import cron_queue_name, parse_spec

        resolved = as_handler(handler)
        trigger = parse_spec(spec, timezone)
        name = cron_queue_name(resolved.func) if queue is None else queue
        window = None if catch_up is None else setting_seconds(catch_up, "catch_up")
        with self._lock:
            self._check_open()
            self._register(name, resolved)
        self._start_worker(name, resolved)
        self._schedule(name, spec, trigger, window)

    def cron(self, spec: str, *, queue: str | None = None, **options: Any) -> Callable[[HandlerFunc], HandlerFunc]:
        """Declare a cron handler, ticked only once ``run()`` (a worker) serves its queue (see docs/cron.md)."""
        from .cron.declared import declare

        return declare(self.handler, self._declared_crons, spec, queue, options)

    def _schedule(self, name: str, spec: str, trigger: Any, window: float | None) -> None:
        from .cron import CronScheduler

        with self._lock:
            self._check_open()
            if self._cron is None:
                self._cron = CronScheduler(self.backend, clock=self._clock)
            cron = self._cron
        cron.add(name, spec, trigger, catch_up=window)
        self._worker.presence.add_schedule(name, spec, str(getattr(trigger, "timezone", "UTC")))

    # -- inspecting and managing ---------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """Return the job with id ``job_id``, or ``None`` for an unknown id."""
        return self.backend.get_job(str(job_id))

    def list_jobs(
        self, queue: str | None = None, status: JobStatus | str | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> list[Job]:
        """Return up to ``limit`` jobs, newest first, optionally of one queue and/or status."""
        parsed: JobStatus | None = None
        if status is not None:
            try:
                parsed = JobStatus(status)
            except ValueError:
                accepted = ", ".join(s.value for s in JobStatus)
                raise ConfigurationError(f"unknown status {status!r}; accepted: {accepted}") from None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, not {limit!r}")
        return self.backend.list_jobs(queue, parsed, limit)

    def retry_job(self, job_id: str) -> None:
        """Run a ``FAILED``, ``CANCELLED`` or ``PROCESSED`` job again (``NEW``, due now, retries 0).

        A ``NEW`` job is left as it is. Raises ``JobNotFoundError`` for an unknown id and
        ``DuplicateJobError`` when another job with the same fingerprint is waiting.
        """
        self.backend.retry_job(str(job_id))

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job: a waiting one never runs; a running one is told to stop; both end ``CANCELLED``.

        A finished job is left as it is. Raises ``JobNotFoundError`` for an unknown id.
        """
        self.backend.cancel_job(str(job_id))

    def stats(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {"new": n, "running": n, "processed": n, "failed": n, "cancelled": n}}``.

        A paused queue (``pause_queue``) also has ``"paused": 1``, and is listed even without jobs.
        """
        return self._with_paused(self.backend.stats())

    # -- shutting down -------------------------------------------------------------------

    def shutdown(self, timeout: timedelta | float | None = None) -> None:
        """Stop claiming, let running attempts finish within ``timeout``, cancel the rest, close.

        ``timeout`` defaults to the client's ``shutdown_timeout``. Stops cron, closes the
        client's threads and connections. Calling it again does nothing.
        """
        grace = self.shutdown_timeout if timeout is None else setting_seconds(timeout, "timeout")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cron, self._cron = self._cron, None
        self._stop_requested.set()
        if cron is not None:
            cron.stop()
        # Asked first so it stops between batches while the grace time runs; joined before close.
        self._pruner.stop()
        self._worker.stop(grace, self._force)
        self._pruner.join()
        self.backend.close()

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("this neoq client was shut down; create a new one with neoq.new()")
