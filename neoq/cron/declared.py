"""Cron schedules declared with ``@nq.cron(spec)``: checked now, ticked only by a worker's ``run()``.

``start_cron`` starts ticking at once, in whatever process calls it. A web application imports
the same module as its workers, so a schedule declared at import time must not tick there:
``declare`` registers the handler and keeps the schedule on the client, and ``Neoq.run()`` starts
the schedules of the queues it serves (``neoq worker --queue Q`` ticks only Q's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..handler import HandlerFunc
from ..job import setting_seconds
from .naming import cron_queue_name
from .triggers import parse_spec

__all__ = ["declare"]


def declare(
    handler: Callable[..., Callable[[HandlerFunc], HandlerFunc]],
    declared: dict[str, tuple[str, Any, float | None]],
    spec: str,
    queue: str | None,
    options: dict[str, Any],
) -> Callable[[HandlerFunc], HandlerFunc]:
    """The decorator of ``nq.cron``: check the spec now, register the handler (``nq.handler``), keep the schedule."""
    settings = dict(options)
    timezone = settings.pop("timezone", "UTC")
    catch_up = settings.pop("catch_up", None)
    trigger = parse_spec(spec, timezone)  # CronSpecError / ConfigurationError at declaration
    window = None if catch_up is None else setting_seconds(catch_up, "catch_up")

    def register(func: HandlerFunc) -> HandlerFunc:
        name = cron_queue_name(func) if queue is None else queue
        handler(name, **settings)(func)
        declared[name] = (spec, trigger, window)
        return func

    return register
