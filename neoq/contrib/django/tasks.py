"""A backend for Django's tasks framework (``django.tasks``; the ``django-tasks`` backport on Django 5.2).

::

    TASKS = {
        "default": {
            "BACKEND": "neoq.contrib.django.tasks.NeoqTaskBackend",
            "QUEUES": ["default", "emails"],       # [] : any queue name
            "OPTIONS": {"CONCURRENCY": 4, "TIMEOUT": 60, "MAX_RETRIES": 0, "QUEUE_PREFIX": "tasks."},
        },
    }

``@task`` functions are then enqueued as neoq jobs (on queue ``QUEUE_PREFIX + queue_name``; payload
``{"task": "<module.function>", "args": [...], "kwargs": {...}, "queue": ..., "deferred": ...}``) and
run by ``manage.py neoq_worker``. Enqueueing goes through ``neoq.contrib.django.enqueue``: when neoq
uses Django's database, a task enqueued inside ``transaction.atomic()`` exists only if that
transaction commits, and ``get_result`` inside that transaction reads it through the same connection.

``priority`` is ``Job.priority`` (-100..100, higher first; a neoq backend without the
``"priority"`` capability refuses it at enqueue). Results are neoq's job: status (``RUNNING`` while
an attempt runs), times, the return value (kept as the job's result, in JSON), the error of the
last failed attempt with its traceback and the exception's dotted path, and the worker
(``host:pid``) that ran it. ``MAX_RETRIES`` (default 0, as Django's own backends) lets neoq retry a
failed task with its backoff before it is ``FAILED``.
Configuration errors are reported by ``manage.py check``.
"""

from __future__ import annotations

import builtins
import inspect
import os
import socket
import traceback
import uuid
from collections.abc import Callable, Iterable
from importlib import import_module
from typing import Any

import neoq
from neoq.backends.capabilities import ENQUEUE_IN_TRANSACTION
from neoq.errors import ConfigurationError
from neoq.job import Job, JobStatus

__all__ = ["DEFAULT_QUEUE_PREFIX", "NeoqTaskBackend", "neoq_task_aliases", "register_task_handlers", "worker_id"]

#: Prefix of the neoq queue of a Django task queue.
DEFAULT_QUEUE_PREFIX = "tasks."

_OPTIONS = frozenset({"QUEUE_PREFIX", "CONCURRENCY", "TIMEOUT", "MAX_RETRIES", "BACKOFF", "UNIQUE"})

#: The line a failed attempt's traceback carries to name its worker (an exception note).
_WORKER_NOTE = "neoq worker: "


def _tasks_package() -> str:
    """``django.tasks`` (Django 6) or the ``django_tasks`` backport: the same API."""
    try:
        import_module("django.tasks")
    except ImportError:
        return "django_tasks"
    return "django.tasks"


_PKG = _tasks_package()
# Looked up dynamically, so the type checker sees the same thing with either package installed.
_base: Any = import_module(f"{_PKG}.base")
_backends_base: Any = import_module(f"{_PKG}.backends.base")
_exceptions: Any = import_module(f"{_PKG}.exceptions")
_signals: Any = import_module(f"{_PKG}.signals")
_InvalidTask: type[Exception] = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
#: Django's own normalisation of task arguments (its TypeError is the contract for non-JSON values).
_normalize_json: Callable[[Any], Any] = (
    getattr(_base, "normalize_json", None)
    or import_module("django.utils.json" if _PKG == "django.tasks" else "django_tasks.utils").normalize_json
)

_STATUS = {
    JobStatus.NEW: _base.TaskResultStatus.READY,
    JobStatus.RUNNING: _base.TaskResultStatus.RUNNING,
    JobStatus.PROCESSED: _base.TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: _base.TaskResultStatus.FAILED,
    JobStatus.CANCELLED: _base.TaskResultStatus.FAILED,
}


def worker_id() -> str:
    """``host:pid`` of this process: the worker id of the attempts it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _import_task(path: str) -> Any:
    from django.utils.module_loading import import_string

    task = import_string(path)
    if not isinstance(task, _base.Task):
        raise _InvalidTask(f"{path} is not a task (decorate it with @task)")
    return task


def _exception_path(error: str) -> str:
    """The dotted path of the class of neoq's ``"Class: message"`` error (builtins have no module)."""
    name = error.split(":", 1)[0].strip()
    builtin = getattr(builtins, name, None)
    if "." not in name and isinstance(builtin, type) and issubclass(builtin, BaseException):
        return f"builtins.{name}"
    return name


def _worker_of(trace: str | None) -> tuple[str | None, str | None]:
    """The worker a failed attempt's traceback names (its note), and the traceback without that note."""
    if not trace:
        return None, trace
    lines = trace.splitlines(keepends=True)
    notes = [line for line in lines if line.startswith(_WORKER_NOTE)]
    if not notes:
        return None, trace
    return notes[-1][len(_WORKER_NOTE) :].strip(), "".join(line for line in lines if line not in notes)


class NeoqTaskBackend(_backends_base.BaseTaskBackend):  # type: ignore[misc]
    """Runs ``django.tasks`` tasks on neoq workers (see the module docstring)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(key).upper(): value for key, value in (self.options or {}).items()}
        #: What is wrong with the configuration: ``manage.py check`` reports it, enqueue raises it.
        self.problems: list[str] = []
        unknown = set(options) - _OPTIONS
        if unknown:
            self.problems.append(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(_OPTIONS))}"
            )
        #: Prefix of the neoq queue names.
        self.queue_prefix: str = str(options.get("QUEUE_PREFIX", DEFAULT_QUEUE_PREFIX))
        #: True: neoq's uniqueness applies (the same task and arguments once while waiting).
        self.unique: bool = bool(options.get("UNIQUE", False))
        settings = {"max_retries": options.get("MAX_RETRIES", 0)}
        for key in ("CONCURRENCY", "TIMEOUT", "BACKOFF"):
            if key in options:
                settings[key.lower()] = options[key]
        try:
            neoq.Handler(lambda job: None, **settings)
        except ConfigurationError as exc:
            self.problems.append(f"TASKS[{alias!r}]['OPTIONS']: {exc}")
        #: ``neoq.Handler`` settings of the worker's handlers.
        self.handler_settings: dict[str, Any] = settings

    def neoq_queue(self, queue_name: str) -> str:
        """The neoq queue of the Django task queue ``queue_name``."""
        return f"{self.queue_prefix}{queue_name}"

    def check(self, **kwargs: Any) -> Iterable[Any]:
        """Django system checks (``manage.py check``): this alias's options (neoq's settings: the app's check)."""
        from django.core import checks

        yield from super().check(**kwargs)
        for problem in self.problems:
            yield checks.Error(problem, id="neoq.E002", obj=self.alias)

    def _check_configured(self) -> None:
        if self.problems:
            raise ConfigurationError(self.problems[0])

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from . import enqueue

        self._check_configured()
        self.validate_task(task)
        # Django's normalisation: its TypeError/ValueError for what JSON cannot hold, before anything is stored.
        payload = {
            "task": task.module_path,
            "args": _normalize_json(list(args)),
            "kwargs": _normalize_json(dict(kwargs)),
            "queue": task.queue_name,
            "deferred": task.run_after is not None,
        }
        job = Job(
            queue=self.neoq_queue(task.queue_name),
            payload=payload,
            run_after=task.run_after,
            priority=task.priority,
            # Django's tasks are not deduplicated: each enqueue is a new result.
            fingerprint=None if self.unique else uuid.uuid4().hex,
        )
        job_id = enqueue(job)
        # Read back, through the connection that stored it: enqueued_at is the stored created_at,
        # so the result equals get_result(result.id).
        stored = self._stored(job_id)
        ready = _base.TaskResultStatus.READY
        result = self._result(task, job_id, ready, args=payload["args"], kwargs=payload["kwargs"])
        object.__setattr__(result, "enqueued_at", None if stored is None else stored.created_at)
        _signals.task_enqueued.send(type(self), task_result=result)
        return result

    def _stored(self, job_id: str) -> Job | None:
        """The job as the caller sees it: through Django's connection when neoq enqueues through it."""
        from . import _alias, get_client, psycopg_connection

        client = get_client()
        alias = _alias(None)
        backend: Any = client.backend
        if (
            alias is not None
            and ENQUEUE_IN_TRANSACTION in backend.capabilities
            and "connection" in inspect.signature(backend.get_job).parameters
        ):
            stored: Job | None = backend.get_job(job_id, connection=psycopg_connection(alias))
            return stored
        return client.get_job(job_id)

    def get_result(self, result_id: str) -> Any:
        self._check_configured()
        job = self._stored(str(result_id))
        if job is None or "task" not in job.payload or not job.queue.startswith(self.queue_prefix):
            raise _exceptions.TaskResultDoesNotExist(result_id)
        payload = job.payload
        queue_name = payload.get("queue", job.queue[len(self.queue_prefix) :])
        task = _import_task(payload["task"])
        changes: dict[str, Any] = {}
        if queue_name != task.queue_name:
            changes["queue_name"] = queue_name
        if payload.get("deferred") and job.run_after is not None:
            changes["run_after"] = job.run_after
        if job.priority != task.priority:
            changes["priority"] = job.priority
        if changes:
            task = task.using(**changes)
        stored_result: Any = getattr(job, "result", None)
        worker, trace = _worker_of(getattr(job, "traceback", None))
        if isinstance(stored_result, dict) and job.status is JobStatus.PROCESSED:
            worker = stored_result.get("worker") or worker
        result = self._result(
            task,
            str(job.id),
            _STATUS[job.status],
            args=payload.get("args", []),
            kwargs=payload.get("kwargs", {}),
            enqueued_at=job.created_at,
            started_at=job.ran_at,
            last_attempted_at=job.ran_at,
            finished_at=job.finished_at,
            worker_ids=[worker or "unknown"] * job.attempts,
        )
        if job.status is JobStatus.PROCESSED and isinstance(stored_result, dict):
            object.__setattr__(result, "_return_value", stored_result.get("return_value"))
        if job.error and job.status is not JobStatus.PROCESSED:
            result.errors.append(
                _base.TaskError(exception_class_path=_exception_path(job.error), traceback=trace or job.error)
            )
        return result

    def _result(self, task: Any, result_id: str, status: Any, **fields: Any) -> Any:
        values: dict[str, Any] = {
            "enqueued_at": None,
            "started_at": None,
            "finished_at": None,
            "last_attempted_at": None,
            "errors": [],
            "worker_ids": [],
            **fields,
        }
        return _base.TaskResult(task=task, id=result_id, status=status, backend=self.alias, **values)

    # -- consuming -------------------------------------------------------------------------

    def run_job(self, job: Job) -> dict[str, Any]:
        """Run the task that ``job`` carries (the neoq handler of this backend's queues).

        Returns ``{"return_value": ..., "worker": "host:pid"}``, kept as the job's result. A
        failure is raised as it is (neoq records it, with the traceback, which names the worker).
        """
        from django.utils import timezone

        task = _import_task(job.payload["task"])
        now = timezone.now()
        me = worker_id()
        result = self._result(
            task,
            str(job.id),
            _base.TaskResultStatus.RUNNING,
            args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}),
            enqueued_at=job.created_at,
            started_at=now,
            last_attempted_at=now,
            worker_ids=[me] * max(1, job.attempts),
        )
        _signals.task_started.send(type(self), task_result=result)
        args, kwargs = result.args, result.kwargs
        try:
            if task.takes_context:
                value = task.call(_base.TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = _normalize_json(value)
        except BaseException as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+: the traceback neoq keeps names the worker
                exc.add_note(f"{_WORKER_NOTE}{me}")
            result.errors.append(
                _base.TaskError(
                    exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                    traceback="".join(traceback.format_exception(exc)),
                )
            )
            self._finish(result, _base.TaskResultStatus.FAILED)
            raise
        object.__setattr__(result, "_return_value", value)
        self._finish(result, _base.TaskResultStatus.SUCCESSFUL)
        return {"return_value": value, "worker": me}

    def _finish(self, result: Any, status: Any) -> None:
        from django.utils import timezone

        object.__setattr__(result, "status", status)
        object.__setattr__(result, "finished_at", timezone.now())
        _signals.task_finished.send(type(self), task_result=result)


def neoq_task_aliases() -> list[str]:
    """The aliases of ``TASKS`` whose backend is ``NeoqTaskBackend`` or a subclass (others are not built)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    found = []
    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        try:
            backend_class = import_string(str(params.get("BACKEND", "")))
        except ImportError:
            continue  # another alias's problem: Django reports it when that alias is used
        if isinstance(backend_class, type) and issubclass(backend_class, NeoqTaskBackend):
            found.append(alias)
    return found


def task_backend(alias: str) -> NeoqTaskBackend:
    """The ``NeoqTaskBackend`` of ``alias`` (``ConfigurationError`` naming the neoq aliases otherwise)."""
    aliases = neoq_task_aliases()
    if alias not in aliases:
        raise ConfigurationError(f"TASKS has no neoq task backend {alias!r}; neoq's: {', '.join(aliases) or 'none'}")
    backend: NeoqTaskBackend = import_module(_PKG).task_backends[alias]
    return backend


def register_task_handlers(
    client: neoq.Neoq,
    *,
    aliases: Iterable[str] | None = None,
    queue_names: Iterable[str] = (),
    scan_store: bool = False,
) -> list[str]:
    """Register a handler on ``client`` for each queue of each ``NeoqTaskBackend`` in ``TASKS``.

    ``aliases``: only these (default every neoq alias). A backend with ``QUEUES: []`` (any queue)
    serves ``queue_names`` (the worker's ``--queue``), else ``default`` and, with ``scan_store``
    (the worker), the queues of its prefix the store has jobs of. A backend whose configuration
    is wrong is left out (``manage.py check`` and its own enqueue report it). Returns the neoq
    queues registered.
    """
    from . import with_django_connections

    wanted = neoq_task_aliases() if aliases is None else list(aliases)
    registered: list[str] = []
    for alias in wanted:
        backend = task_backend(alias)
        if backend.problems:
            continue
        names = set(backend.queues) or set(queue_names) or _any_queue(client, backend.queue_prefix, scan_store)
        run: Callable[[Job], Any] = backend.run_job
        for queue_name in sorted(names):
            queue = backend.neoq_queue(queue_name)
            if queue in client.handlers:
                continue  # two aliases on the same queue: either runs its jobs (the payload names the task)
            client.handler(queue, **backend.handler_settings)(with_django_connections(run))
            registered.append(queue)
    return registered


def _any_queue(client: neoq.Neoq, prefix: str, scan_store: bool) -> set[str]:
    """For ``QUEUES: []``: Django's default queue, and every queue of ``prefix`` the store has jobs of."""
    default: str = import_module(_PKG).DEFAULT_TASK_QUEUE_NAME
    if not scan_store:
        return {default}
    found = {queue[len(prefix) :] for queue in client.stats() if queue.startswith(prefix)}
    return found | {default}
