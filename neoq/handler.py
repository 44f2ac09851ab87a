"""``Handler``: a function and how its queue runs it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .backoff import default_backoff
from .defaults import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, MAX_DURATION
from .errors import ConfigurationError
from .flow import RateLimit, check_global_limit
from .job import setting_seconds, to_seconds

if TYPE_CHECKING:
    from .job import Job

__all__ = ["HANDLER_MODES", "Handler", "HandlerFunc"]

#: How a backend may run a queue's attempts: ``"transaction"`` (the attempt holds the job as the
#: store allows, in a transaction where it has one; every backend) or ``"lease"`` (a renewed lease,
#: no transaction held). Each backend names the modes it serves in ``Backend.handler_modes``.
HANDLER_MODES = ("transaction", "lease")

#: What a handler is: any callable taking the ``Job``. Its return value is ignored.
HandlerFunc = Callable[["Job"], Any]


class Handler:
    """A handler function with its queue settings.

    ``concurrency``: the most jobs of the queue this client runs at once.
    ``timeout``: the longest one attempt may run (a ``timedelta`` or seconds, at most 100 years,
    ``neoq.defaults.MAX_DURATION``; ``None``: no limit but the job's deadline). ``max_retries``:
    used for jobs that do not set their own. ``backoff``: ``backoff(retries) -> timedelta |
    float``, the delay before each retry (clamped to 0 .. 100 years).
    ``mode``: ``"transaction"`` or ``"lease"`` (see ``HANDLER_MODES``); ``None``, the default, takes
    the backend's default mode (``"transaction"`` unless the backend was told otherwise). A mode
    the backend does not serve (``Backend.handler_modes``) is refused when the queue starts.
    ``global_limit``: the most jobs of the queue running at once across every process sharing the
    store (an ``int`` >= 1; capability ``"global_limit"``). ``rate_limit``: a ``neoq.RateLimit`` on
    the queue's starts across every process (capability ``"rate_limit"``). See docs/flow-control.md.
    Invalid settings raise ``ConfigurationError``.
    """

    __slots__ = ("backoff", "concurrency", "func", "global_limit", "max_retries", "mode", "rate_limit", "timeout")

    def __init__(
        self,
        func: HandlerFunc,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: timedelta | float | None = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        backoff: Callable[[int], timedelta | float] | None = None,
        mode: str | None = None,
        global_limit: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if not callable(func):
            raise ConfigurationError(f"handler must be callable, got {type(func).__name__}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        seconds = None if timeout is None else setting_seconds(timeout, "timeout")
        if seconds is not None and seconds > MAX_DURATION:
            raise ConfigurationError(
                f"timeout must be at most 100 years ({MAX_DURATION:.0f} seconds), got {seconds:g} seconds; "
                "give timeout=None for no limit"
            )
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ConfigurationError(f"max_retries must be an int >= 0 or None, not {max_retries!r}")
        if backoff is not None and not callable(backoff):
            raise ConfigurationError(f"backoff must be callable, got {type(backoff).__name__}")
        if mode is not None and mode not in HANDLER_MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(map(repr, HANDLER_MODES))} or None, not {mode!r}")
        #: The function that runs each job.
        self.func: HandlerFunc = func
        #: The most jobs of this queue one client runs at once.
        self.concurrency: int = concurrency
        #: The longest one attempt may run, in seconds; ``None`` for no limit.
        self.timeout: float | None = seconds
        #: Retries for jobs that do not set ``max_retries``; ``None`` means ``DEFAULT_MAX_RETRIES``.
        self.max_retries: int | None = max_retries
        #: The retry delay policy.
        self.backoff: Callable[[int], timedelta | float] = backoff or default_backoff
        #: ``"transaction"``, ``"lease"``, or ``None`` for the backend's default.
        self.mode: str | None = mode
        #: The most jobs of the queue running at once in all processes; ``None``: no such limit.
        self.global_limit: int | None = check_global_limit(global_limit)
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(f"rate_limit must be a neoq.RateLimit or None, not {type(rate_limit).__name__}")
        #: The limit on the queue's starts in all processes; ``None``: none.
        self.rate_limit: RateLimit | None = rate_limit

    def max_retries_for(self, job: Job) -> int:
        """Return how many retries ``job`` gets: its own, else this handler's, else the default."""
        if job.max_retries is not None:
            return job.max_retries
        if self.max_retries is not None:
            return self.max_retries
        return DEFAULT_MAX_RETRIES

    def retry_delay(self, retries: int) -> float:
        """Return the delay in seconds before retry number ``retries``, between 0 and 100 years.

        Raises ``TypeError`` when ``backoff`` returns something else than a finite number of
        seconds or a ``timedelta``; whatever ``backoff`` raises propagates.
        """
        delay = self.backoff(retries)
        if isinstance(delay, int) and not isinstance(delay, bool):
            delay = min(max(delay, 0), MAX_DURATION)  # before float(): an int may be too large for one
        return min(MAX_DURATION, max(0.0, to_seconds(delay, "backoff result")))

    @property
    def name(self) -> str:
        """The handler function's qualified name, for logs."""
        func = self.func
        return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)

    def __repr__(self) -> str:
        return (
            f"Handler({self.name}, concurrency={self.concurrency}, timeout={self.timeout}, "
            f"max_retries={self.max_retries})"
        )


def as_handler(handler: Handler | HandlerFunc, **settings: Any) -> Handler:
    """Return ``handler`` if it is a ``Handler``, else wrap the callable with ``settings``."""
    if isinstance(handler, Handler):
        if settings:
            raise ConfigurationError("give settings either to Handler(...) or as keyword arguments, not both")
        return handler
    return Handler(handler, **settings)
