"""Stand-ins that let Django's own ``tests/tasks`` run on ``NeoqTaskBackend`` (``make test-django-suite``).

Django's suite exercises the task API through its two reference backends. Its ``TASKS`` settings
name them; ``tools/django_suite.py`` rewrites those names to the classes below, which are
``NeoqTaskBackend`` with only what the suite needs added:

- ``DummyNeoqBackend``: nothing runs; ``results`` and ``clear()`` as ``DummyBackend`` keeps them.
- ``ImmediateNeoqBackend``: ``enqueue`` stores the task as neoq does, then drains the worker in
  this process and returns ``get_result()``: what a worker made of it, read back from the store.

Everything else (validation, storing, results, errors, tracebacks, signals) is neoq's backend.
"""

from __future__ import annotations

import sys
from typing import Any

from neoq.contrib.django import get_client, shutdown_client
from neoq.contrib.django.tasks import NeoqTaskBackend, register_task_handlers


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """A new ``TASKS`` or ``NEOQ`` (``override_settings``): the next use builds a new client."""
    if setting in ("TASKS", "NEOQ"):
        shutdown_client()


class DummyNeoqBackend(NeoqTaskBackend):
    """``NeoqTaskBackend`` that also lists what it enqueued (``results``, ``clear()``), as ``DummyBackend``."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.results: list[Any] = []

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result = super().enqueue(task, args, kwargs)
        self.results.append(result)
        return result

    def clear(self) -> None:
        self.results.clear()


class ImmediateNeoqBackend(NeoqTaskBackend):
    """``NeoqTaskBackend`` whose ``enqueue`` runs the worker until the task is done, as ``ImmediateBackend``."""

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result = super().enqueue(task, args, kwargs)
        client = get_client()
        register_task_handlers(client, aliases=[self.alias], queue_names=[task.queue_name])
        client.drain(timeout=60)
        return self.get_result(result.id)


def install_backport_alias() -> None:
    """Make the ``django-tasks`` backport importable as ``django.tasks`` (Django < 6 has none)."""
    import django
    import django_tasks
    from django_tasks import backends, base, exceptions, signals, utils
    from django_tasks.backends import base as backends_base
    from django_tasks.backends import dummy, immediate

    if not hasattr(exceptions, "InvalidTask"):  # Django 6 names them without "Error"
        exceptions.InvalidTask = exceptions.InvalidTaskError  # type: ignore[attr-defined]
        exceptions.InvalidTaskBackend = exceptions.InvalidTaskBackendError  # type: ignore[attr-defined]
    aliases = {
        "": django_tasks,
        ".base": base,
        ".exceptions": exceptions,
        ".signals": signals,
        ".utils": utils,
        ".backends": backends,
        ".backends.base": backends_base,
        ".backends.dummy": dummy,
        ".backends.immediate": immediate,
    }
    for suffix, module in aliases.items():
        sys.modules[f"django.tasks{suffix}"] = module
    django.tasks = django_tasks  # type: ignore[attr-defined]
