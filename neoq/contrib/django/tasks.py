"""A backend for Django's tasks framework (``django.tasks``; the ``django-tasks`` backport on Django 5.2).

::

    TASKS = {
        "default": {
            "BACKEND": "neoq.contrib.django.tasks.NeoqTaskBackend",
            "QUEUES": ["default", "emails"],       # the queues neoq_worker serves
            "OPTIONS": {"CONCURRENCY": 4, "TIMEOUT": 60, "MAX_RETRIES": 0, "QUEUE_PREFIX": "tasks."},
        },
    }

``@task`` functions are then enqueued as neoq jobs (on queue ``QUEUE_PREFIX + queue_name``; payload
``{"task": "<module.function>", "args": [...], "kwargs": {...}}``) and run by ``manage.py neoq_worker``.
Enqueueing goes through ``neoq.contrib.django.enqueue``: when neoq uses Django's database, a task
enqueued inside ``transaction.atomic()`` exists only if that transaction commits.

Supported: ``run_after`` (deferred tasks), ``priority`` (``Job.priority``: -100..100, higher first,
on a neoq backend with the ``"priority"`` capability), results by id (``get_result``: status, times,
errors), async task functions. Not supported: return values (neoq keeps no results:
``return_value`` is ``None``). ``MAX_RETRIES`` (default 0, as Django's own backends) lets neoq
retry a failed task with its backoff before it is ``FAILED``.
"""

from __future__ import annotations

import builtins
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import import_module
from typing import Any

import neoq
from neoq.errors import ConfigurationError
from neoq.job import Job, JobStatus

__all__ = ["DEFAULT_QUEUE_PREFIX", "NeoqTaskBackend", "register_task_handlers"]

#: Prefix of the neoq queue of a Django task queue.
DEFAULT_QUEUE_PREFIX = "tasks."


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

_STATUS = {
    JobStatus.NEW: _base.TaskResultStatus.READY,
    JobStatus.RUNNING: _base.TaskResultStatus.RUNNING,
    JobStatus.PROCESSED: _base.TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: _base.TaskResultStatus.FAILED,
    JobStatus.CANCELLED: _base.TaskResultStatus.FAILED,
}


def _import_task(path: str) -> Any:
    from django.utils.module_loading import import_string

    task = import_string(path)
    if not isinstance(task, _base.Task):
        raise _InvalidTask(f"{path} is not a task (decorate it with @task)")
    return task


def _exception_path(error: str) -> str:
    """``module.Class`` of neoq's ``"Class: message"`` error, as far as it can tell."""
    name = error.split(":", 1)[0].strip()
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return f"builtins.{name}"
    return name


class NeoqTaskBackend(_backends_base.BaseTaskBackend):  # type: ignore[misc]
    """Runs ``django.tasks`` tasks on neoq workers (see the module docstring)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {key.upper(): value for key, value in self.options.items()}
        unknown = set(options) - {"QUEUE_PREFIX", "CONCURRENCY", "TIMEOUT", "MAX_RETRIES", "BACKOFF", "UNIQUE"}
        if unknown:
            raise ConfigurationError(f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(sorted(unknown))}")
        #: Prefix of the neoq queue names.
        self.queue_prefix: str = options.get("QUEUE_PREFIX", DEFAULT_QUEUE_PREFIX)
        #: True: neoq's uniqueness applies (the same task and arguments once while waiting).
        self.unique: bool = bool(options.get("UNIQUE", False))
        settings = {"max_retries": options.get("MAX_RETRIES", 0)}
        for key in ("CONCURRENCY", "TIMEOUT", "BACKOFF"):
            if key in options:
                settings[key.lower()] = options[key]
        #: ``neoq.Handler`` settings of the worker's handlers.
        self.handler_settings: dict[str, Any] = settings

    def neoq_queue(self, queue_name: str) -> str:
        """The neoq queue of the Django task queue ``queue_name``."""
        return f"{self.queue_prefix}{queue_name}"

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from . import enqueue

        self.validate_task(task)
        payload = {"task": task.module_path, "args": list(args), "kwargs": dict(kwargs)}
        job = Job(
            queue=self.neoq_queue(task.queue_name),
            payload=payload,
            run_after=task.run_after,
            priority=task.priority,
            # Django's tasks are not deduplicated: each enqueue is a new result.
            fingerprint=None if self.unique else uuid.uuid4().hex,
        )
        job_id = enqueue(job)
        result = self._result(
            task, job_id, _base.TaskResultStatus.READY, args=payload["args"], kwargs=payload["kwargs"]
        )
        object.__setattr__(result, "enqueued_at", datetime.now(timezone.utc))
        _signals.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        from . import get_client

        job = get_client().get_job(str(result_id))
        if job is None or "task" not in job.payload or not job.queue.startswith(self.queue_prefix):
            raise _exceptions.TaskResultDoesNotExist(result_id)
        task = _import_task(job.payload["task"])
        result = self._result(
            task,
            str(job.id),
            _STATUS[job.status],
            args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}),
            enqueued_at=job.created_at,
            started_at=job.ran_at,
            last_attempted_at=job.ran_at,
            finished_at=job.finished_at,
            worker_ids=["neoq"] * (job.retries + 1) if job.ran_at else [],
        )
        if job.error:
            result.errors.append(_base.TaskError(exception_class_path=_exception_path(job.error), traceback=job.error))
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

    def run_job(self, job: Job) -> None:
        """Run the task that ``job`` carries (the neoq handler of this backend's queues)."""
        task = _import_task(job.payload["task"])
        now = datetime.now(timezone.utc)
        result = self._result(
            task,
            str(job.id),
            _base.TaskResultStatus.RUNNING,
            args=job.payload.get("args", []),
            kwargs=job.payload.get("kwargs", {}),
            enqueued_at=job.created_at,
            started_at=now,
            last_attempted_at=now,
            worker_ids=["neoq"] * (job.retries + 1),
        )
        _signals.task_started.send(type(self), task_result=result)
        args, kwargs = result.args, result.kwargs
        try:
            if task.takes_context:
                task.call(_base.TaskContext(task_result=result), *args, **kwargs)
            else:
                task.call(*args, **kwargs)
        except BaseException as exc:
            error_type = type(exc)
            result.errors.append(
                _base.TaskError(
                    exception_class_path=f"{error_type.__module__}.{error_type.__qualname__}",
                    traceback="".join(traceback.format_exception(exc)),
                )
            )
            self._finish(result, _base.TaskResultStatus.FAILED)
            raise
        self._finish(result, _base.TaskResultStatus.SUCCESSFUL)

    def _finish(self, result: Any, status: Any) -> None:
        object.__setattr__(result, "status", status)
        object.__setattr__(result, "finished_at", datetime.now(timezone.utc))
        _signals.task_finished.send(type(self), task_result=result)


def register_task_handlers(client: neoq.Neoq) -> None:
    """Register a handler on ``client`` for each queue of each ``NeoqTaskBackend`` in ``TASKS``."""
    from django.conf import settings

    from . import with_django_connections

    configured = getattr(settings, "TASKS", None) or {}
    if not any(str(params.get("BACKEND", "")).endswith(".NeoqTaskBackend") for params in configured.values()):
        return
    backends = import_module(_PKG).task_backends
    for alias in configured:
        backend = backends[alias]
        if not isinstance(backend, NeoqTaskBackend):
            continue
        if not backend.queues:
            raise ConfigurationError(f"TASKS[{alias!r}]: list the queues the neoq workers serve in QUEUES")
        run: Callable[[Job], None] = backend.run_job
        for queue_name in sorted(backend.queues):
            client.handler(backend.neoq_queue(queue_name), **backend.handler_settings)(with_django_connections(run))
