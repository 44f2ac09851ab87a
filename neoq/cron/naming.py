"""The queue a cron schedule stores its ticks on, named after its handler when no ``queue=`` is given."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..defaults import MAX_QUEUE_NAME_LENGTH
from ..errors import ConfigurationError

__all__ = ["CRON_QUEUE_PREFIX", "cron_queue_name"]

#: The prefix of the queue names ``start_cron`` derives from handler functions.
CRON_QUEUE_PREFIX = "cron:"


def cron_queue_name(func: Callable[..., Any]) -> str:
    """Return the default queue of a cron handler: ``"cron:<module>.<qualified name>"``.

    The name must be the same in every process and differ between handlers, so callables
    without a unique importable name (lambdas, ``functools.partial``, functions defined inside
    another function, callable objects) raise ``ConfigurationError``: pass ``queue=`` for those.
    """
    if isinstance(func, functools.partial):
        raise ConfigurationError("a functools.partial has no name of its own; give start_cron a queue= name")
    target = func.__func__ if inspect.ismethod(func) else func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ConfigurationError(
            f"cannot name a cron queue after {func!r}, which has no module and qualified name; "
            "give start_cron a queue= name"
        )
    if "<lambda>" in qualname:
        raise ConfigurationError("a lambda has no unique name; give start_cron a queue= name")
    if "<locals>" in qualname:
        raise ConfigurationError(
            f"{qualname} is defined inside a function, so its name is not unique; give start_cron a queue= name"
        )
    name = f"{CRON_QUEUE_PREFIX}{module}.{qualname}"
    if len(name) > MAX_QUEUE_NAME_LENGTH:
        raise ConfigurationError(
            f"the derived cron queue name {name[:40]!r}... is {len(name)} characters, over the limit of "
            f"{MAX_QUEUE_NAME_LENGTH}; give start_cron a queue= name"
        )
    return name
