"""``Job.unique_for``: its check before storing (docs/flow-control.md, "Unique for a period")."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Protocol

from .defaults import MAX_DURATION
from .errors import InvalidJobError

__all__ = ["check_unique_for", "unique_seconds"]


def check_unique_for(value: object) -> float | None:
    """Return ``Job.unique_for`` as seconds (``None`` stays ``None``), or raise ``InvalidJobError``.

    A ``timedelta`` or a number of seconds, above 0 and at most 100 years.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        kind = type(value).__name__
        raise InvalidJobError(f"unique_for must be a timedelta, a number of seconds or None, not {kind}")
    if math.isnan(seconds) or not 0 < seconds <= MAX_DURATION:
        raise InvalidJobError(f"unique_for must be above 0 and at most 100 years, not {value!r}")
    return seconds


class _UniqueFor(Protocol):
    """A ``neoq.job.Job`` as this module reads it (a protocol: ``job`` imports this module)."""

    @property
    def unique_for(self) -> timedelta | float | None: ...


def unique_seconds(job: _UniqueFor) -> float:
    """The ``unique_for`` of a prepared job (``neoq.job.prepare_job`` made it seconds), as seconds; 0: none."""
    value = job.unique_for
    if value is None:
        return 0.0
    return value if isinstance(value, float) else check_unique_for(value) or 0.0
