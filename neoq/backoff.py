"""Retry delays: the default policy and the exponential one."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from .errors import ConfigurationError

__all__ = ["Backoff", "default_backoff", "exponential_backoff"]

#: A retry policy: called with the job's new ``retries`` value (1 after the first failure),
#: returns the delay before the retry as a ``timedelta`` or a number of seconds.
Backoff = Callable[[int], "timedelta | float"]


def default_backoff(retries: int) -> float:
    """Return ``retries**4 + 15 + random.uniform(0, 30) * retries`` seconds (Sidekiq's curve)."""
    return float(retries**4 + 15 + random.uniform(0, 30) * retries)


def exponential_backoff(
    base: float = 1.0,
    factor: float = 2.0,
    max: float = 3600.0,  # noqa: A002 - the name API.md gives
    jitter: bool = True,
) -> Callable[[int], float]:
    """Build a policy whose delay is ``min(max, base * factor**(retries - 1))`` seconds.

    With ``jitter``, the delay is a uniformly random value between half of that and all of it,
    so jobs that failed together do not retry together.
    """
    for name, value in (("base", base), ("factor", factor), ("max", max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigurationError(f"exponential_backoff {name} must be a number >= 0, not {value!r}")
    cap = float(max)

    def backoff(retries: int) -> float:
        try:
            delay = min(cap, base * factor ** (retries - 1))
        except OverflowError:
            delay = cap
        if jitter:
            delay = random.uniform(delay / 2, delay)
        return float(delay)

    return backoff
