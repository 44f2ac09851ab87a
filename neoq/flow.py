"""The flow-control values of the public API: ``RateLimit`` and ``Snooze`` (docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from .defaults import MAX_DURATION
from .errors import ConfigurationError
from .job import to_seconds

if TYPE_CHECKING:
    from .job import Job

__all__ = ["RateLimit", "Snooze", "check_global_limit"]


#: The most a rate limit's window is counted longer than its ``per`` (seconds; ``RateLimit.window``).
RATE_MARGIN = 0.075


class RateLimit:
    """At most ``count`` starts of a queue's jobs in any window of length ``per``, across every process.

    ``per`` is a ``timedelta`` or seconds. The window slides: it is every stretch of time of that
    length, not a bucket refilled at fixed moments, so no burst of ``2 * count`` straddles a
    boundary. ``key(job) -> str`` makes the limit hold per key (per tenant, per API token): jobs of
    one key wait while others start. Give it to ``Handler(rate_limit=...)``. ``count`` not an ``int``
    of at least 1, ``per`` not above 0 (or above 100 years), or a ``key`` that is not callable
    raise ``ConfigurationError``.
    """

    __slots__ = ("count", "key", "per")

    def __init__(self, count: int, per: timedelta | float, key: Callable[[Job], str] | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"RateLimit count must be an int >= 1, not {count!r}")
        try:
            seconds = to_seconds(per, "RateLimit per")
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
        if not 0 < seconds <= MAX_DURATION:
            raise ConfigurationError(f"RateLimit per must be above 0 and at most 100 years, got {seconds:g} seconds")
        if key is not None and not callable(key):
            raise ConfigurationError(f"RateLimit key must be callable as key(job) -> str, not {type(key).__name__}")
        #: The most starts in any window.
        self.count: int = count
        #: The window's length, in seconds.
        self.per: float = seconds
        #: ``key(job) -> str``: one window per key; ``None``: one window for the queue.
        self.key: Callable[[Job], str] | None = key

    @property
    def window(self) -> float:
        """The window a store counts this limit's starts in (seconds): ``per`` and a margin.

        A start is taken when its job is claimed, and the handler starts a moment later, a moment
        that grows with the machine's load (tens of milliseconds on two busy cores). Counted
        ``min(RATE_MARGIN, 7.5% of per)`` longer, no window of the limit's own length sees more handler
        starts than ``count``. The cost: 50 a second lets about 46.5 a second through.
        """
        return self.per + min(RATE_MARGIN, self.per * 0.075)

    def key_of(self, job: Job) -> str:
        """The window ``job`` starts in: ``key(job)`` as a ``str`` (``""`` without a key)."""
        return "" if self.key is None else str(self.key(job))

    def __repr__(self) -> str:
        key = "" if self.key is None else f", key={getattr(self.key, '__qualname__', self.key)!r}"
        return f"RateLimit({self.count}, per={self.per:g}{key})"


def check_global_limit(value: object) -> int | None:
    """Return ``Handler(global_limit=...)`` checked: ``None`` or an ``int`` of at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"global_limit must be an int >= 1 or None, not {value!r}")
    return value


class Snooze(Exception):
    """Raise it in a handler to run the job again after ``delay``, with no failure and no retry counted.

    ``delay`` is a ``timedelta`` or seconds (0 to 100 years). The attempt still counts in
    ``Job.attempts`` (so a worker dying mid-attempt is still seen) and ``Job.snoozes`` grows by one;
    a job may snooze ``neoq.defaults.MAX_SNOOZES`` times (100), after which a further snooze
    fails it (``SnoozeLimitError`` in ``Job.error``). Needs the backend's ``"snooze"`` capability.
    """

    def __init__(self, delay: timedelta | float = 0.0) -> None:
        try:
            seconds = to_seconds(delay, "Snooze delay")
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
        if not 0 <= seconds <= MAX_DURATION:
            raise ConfigurationError(f"Snooze delay must be 0 to 100 years, got {seconds:g} seconds")
        super().__init__(f"snoozed for {seconds:g}s")
        #: Seconds until the job is due again.
        self.delay: float = seconds
