"""Django integration: an app, settings, ``manage.py neoq_worker``, transactional enqueue, django.tasks.

Add ``"neoq.contrib.django"`` to ``INSTALLED_APPS``. By default neoq stores its jobs in Django's
``"default"`` database, which must be PostgreSQL (psycopg 3); ``settings.NEOQ`` changes that (see
``neoq.contrib.django.conf``). Then::

    from django.db import transaction
    from neoq import Job
    from neoq.contrib.django import enqueue, enqueue_on_commit, handler

    @handler("receipts", concurrency=4)        # in <app>/neoq_jobs.py, imported at startup
    def send_receipt(job): ...

    @cron("0 3 * * *", queue="nightly")        # ticked only by manage.py neoq_worker
    def nightly_report(job): ...

    with transaction.atomic():
        order = Order.objects.create(...)
        enqueue(Job(queue="receipts", payload={"order": order.pk}))   # same connection, same transaction:
                                                                      # the job exists only if this commits
    enqueue_on_commit(Job(...))     # enqueued by neoq's own connections once the transaction commits

``python manage.py neoq_worker`` runs the registered handlers, the declared cron schedules, and
the queues of the django.tasks backend ``neoq.contrib.django.tasks.NeoqTaskBackend``, until
SIGTERM/SIGINT. ``python manage.py neoq jobs|stats|migrate`` is the ``neoq`` command line on the
project's settings, and ``manage.py migrate`` creates or upgrades neoq's schema.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any

import neoq
from neoq.backends.capabilities import ENQUEUE_IN_TRANSACTION
from neoq.errors import ConfigurationError
from neoq.handler import HandlerFunc
from neoq.job import Job, prepare_job

__all__ = [
    "cron",
    "enqueue",
    "enqueue_many",
    "enqueue_on_commit",
    "get_client",
    "handler",
    "psycopg_connection",
    "shutdown_client",
]

_lock = threading.RLock()
_client: neoq.Neoq | None = None
_registrations: dict[str, tuple[HandlerFunc, dict[str, Any]]] = {}
_crons: dict[str, tuple[HandlerFunc, str, dict[str, Any]]] = {}


def handler(queue: str, **settings: Any) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register the decorated function as ``queue``'s handler for ``manage.py neoq_worker``.

    ``settings`` are ``neoq.Handler`` settings. Put handlers in ``<app>/neoq_jobs.py`` (imported
    at startup). Each job runs with Django's database connections managed as for a request
    (``close_old_connections`` before and after). Returns the function unchanged.
    """

    def register(func: HandlerFunc) -> HandlerFunc:
        neoq.Handler(func, **settings)  # validates the settings now, not in the worker
        with _lock:
            if (queue in _registrations and _registrations[queue][0] is not func) or queue in _crons:
                raise ConfigurationError(f"queue {queue!r} already has a neoq handler")
            _registrations[queue] = (func, settings)
            if _client is not None and not _client.closed and queue not in _client.handlers:
                _client.handler(queue, **settings)(with_django_connections(func))
        return func

    return register


def cron(spec: str, *, queue: str | None = None, **options: Any) -> Callable[[HandlerFunc], HandlerFunc]:
    """Declare the decorated function a cron handler, ticked only by ``manage.py neoq_worker``.

    ``spec``, ``queue``, ``timezone``, ``catch_up`` as for ``Neoq.start_cron``; other ``options``
    are ``neoq.Handler`` settings. Web processes, which import the same ``neoq_jobs`` modules,
    never tick; with any number of workers each tick runs once. ``--queue`` selects schedules too.
    """
    from neoq.cron import cron_queue_name, parse_spec

    parse_spec(spec, options.get("timezone", "UTC"))  # a wrong spec fails at import, not in the worker

    def register(func: HandlerFunc) -> HandlerFunc:
        name = cron_queue_name(func) if queue is None else queue
        with _lock:
            if name in _registrations or (name in _crons and _crons[name][0] is not func):
                raise ConfigurationError(f"queue {name!r} already has a neoq handler")
            _crons[name] = (func, spec, options)
        return func

    return register


def with_django_connections(func: HandlerFunc) -> HandlerFunc:
    """Wrap a handler so Django's stale connections are closed around each job, as around a request."""

    @functools.wraps(func)
    def run(job: Job) -> Any:
        from django.db import close_old_connections

        close_old_connections()
        try:
            return func(job)
        finally:
            close_old_connections()

    return run


def get_client() -> neoq.Neoq:
    """The process's ``neoq.Neoq`` client, created from the settings on first use.

    Its handlers are the ``@handler`` and ``@cron`` functions and the queues of the
    ``NeoqTaskBackend`` task backends; they run only in ``neoq_worker`` (or ``run()``/``drain()``),
    and cron schedules tick only in ``neoq_worker`` (``run()``).
    """
    global _client
    with _lock:
        if _client is None or _client.closed:
            from .conf import load_settings

            conf = load_settings()
            client = neoq.new(conf.url, **conf.options)
            try:
                for queue, (func, settings) in _registrations.items():
                    client.handler(queue, **settings)(with_django_connections(func))
                for queue, (func, spec, options) in _crons.items():
                    client.cron(spec, queue=queue, **options)(with_django_connections(func))
                from .tasks import register_task_handlers

                register_task_handlers(client)
            except BaseException:
                client.shutdown()
                raise
            atexit.register(client.shutdown)
            _client = client
        return _client


def shutdown_client(timeout: float | None = None) -> None:
    """Shut the process's client down (if created); the next ``get_client()`` creates a new one."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        atexit.unregister(client.shutdown)
        client.shutdown(timeout)


def psycopg_connection(using: str) -> Any:
    """The ``psycopg.Connection`` under Django's connection ``using`` (opened if need be)."""
    from django.db import connections

    wrapper = connections[using]
    if wrapper.vendor != "postgresql":
        raise ConfigurationError(f"Django database {using!r} is {wrapper.vendor}, not PostgreSQL")
    wrapper.ensure_connection()
    import psycopg

    raw = wrapper.connection
    if not isinstance(raw, psycopg.Connection):
        raise ConfigurationError(
            f"Django database {using!r} uses {type(raw).__module__}, not psycopg 3: install psycopg (3) "
            "so Django and neoq share the connection"
        )
    return raw


def _transaction_of(client: neoq.Neoq, using: str) -> Any:
    """Django's connection ``using``, for an enqueue inside its transaction: the backend must offer that."""
    if ENQUEUE_IN_TRANSACTION not in client.backend.capabilities:
        raise ConfigurationError(
            f"neoq's backend ({type(client.backend).__name__}) cannot enqueue inside Django's transaction "
            f"(it lacks the {ENQUEUE_IN_TRANSACTION!r} capability): set NEOQ['DATABASE'] to None to enqueue "
            "through neoq's own connections, or use enqueue_on_commit()"
        )
    return psycopg_connection(using)


def _alias(using: str | None) -> str | None:
    if using is not None:
        return using
    from .conf import load_settings

    return load_settings().database


def enqueue(job: Job, *, using: str | None = None) -> str:
    """Enqueue ``job`` on Django's database connection, inside its current transaction; return its id.

    Inside ``transaction.atomic()`` (or with ``ATOMIC_REQUESTS``) the job is stored, and workers
    are woken, only if that transaction commits; outside one, at once (Django's autocommit).
    ``using`` is the database alias (default: ``settings.NEOQ["DATABASE"]``). When neoq has
    its own database (a ``URL`` and no ``DATABASE``), this is ``get_client().enqueue(job)``.
    Through Django's connection, neoq's backend needs the ``"enqueue_in_transaction"``
    capability (PostgreSQL has it), else this raises ``ConfigurationError``.
    """
    alias = _alias(using)
    client = get_client()
    if alias is None:
        return client.enqueue(job)
    return client.enqueue(job, connection=_transaction_of(client, alias))


def enqueue_many(jobs: Iterable[Job], *, using: str | None = None) -> list[str]:
    """``enqueue`` for several jobs at once (all or none)."""
    alias = _alias(using)
    client = get_client()
    if alias is None:
        return client.enqueue_many(jobs)
    return client.enqueue_many(jobs, connection=_transaction_of(client, alias))


def enqueue_on_commit(job: Job, *, using: str | None = None, robust: bool = False) -> None:
    """Enqueue ``job`` through neoq's own connections once Django's current transaction commits.

    Nothing is enqueued if it rolls back; outside a transaction, at once. The job is checked now
    (``InvalidJobError`` here, not after the commit). Unlike ``enqueue()`` this works whatever
    database neoq uses, but a crash between the commit and the enqueue loses the job. ``robust``
    as in ``transaction.on_commit``: log an error of the enqueue instead of raising it.
    """
    from django.db import DEFAULT_DB_ALIAS, transaction

    prepare_job(job)
    client = get_client()
    transaction.on_commit(
        functools.partial(client.enqueue, job), using=_alias(using) or DEFAULT_DB_ALIAS, robust=robust
    )
