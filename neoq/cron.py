"""Periodic jobs: cron specs, the cron queue names, and the scheduler that enqueues ticks.

This is the only module that imports APScheduler (3.x). APScheduler decides *when* a tick is
due; it never runs a handler. Each tick becomes one job, stored through
``Backend.enqueue_tick(job, key=<queue>, tick=<tick time>)``, which records ``(queue, tick)``
atomically with the job, so any number of processes running the same schedule store each tick
exactly once. The job then runs like any other (retries, timeout, concurrency).

Why the APScheduler settings are what they are:

- Every process must compute the same tick instants, so ticks come from the spec alone (cron
  fields, or ``@every`` anchored to the Unix epoch), never from when a process started.
- A tick must never be dropped because the scheduler is busy. APScheduler's own executors drop
  a run past ``max_instances`` and past ``misfire_grace_time``, and with ``coalesce`` merge late
  runs into one. Here ``coalesce`` is off, and ``_TickExecutor`` replaces the executors: it
  accepts every run time (there is no instance limit), and hands the run times to one thread
  that stores them in order. The only lateness limit is ``CRON_GRACE``, checked by neoq, which
  is there so a process that was suspended for a day does not flood the queue when it wakes.
- A tick whose job is still running or waiting for a retry does not block the next one: each
  tick's job has its own fingerprint (the payload holds the tick time), and the store dedupes by
  ``(queue, tick)``, not by a waiting job.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .clock import SYSTEM_CLOCK, Clock
from .defaults import MAX_QUEUE_NAME_LENGTH
from .errors import ConfigurationError, CronSpecError, DuplicateJobError, NeoqError
from .job import Job, prepare_job

if TYPE_CHECKING:
    from .app import Neoq

__all__ = [
    "CRON_GRACE",
    "CRON_QUEUE_PREFIX",
    "CronScheduler",
    "cron_queue_name",
    "next_tick",
    "parse_spec",
    "tick_job",
    "ticks",
]

logger = logging.getLogger(__name__)

#: The prefix of the queue names ``start_cron`` derives from handler functions.
CRON_QUEUE_PREFIX = "cron:"

#: How late (seconds) a running process may store a tick. Ticks are normally stored within
#: milliseconds; under load, or while the store is unreachable (storing is retried), later.
#: Past this, the tick is logged and dropped rather than stored, so a process that was
#: suspended for hours does not enqueue every tick it slept through.
CRON_GRACE = 600.0

#: The first and the longest pause between attempts to store a tick while the store fails.
_RETRY_FIRST = 0.05
_RETRY_MAX = 5.0

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)


# -- specs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str  # as users know it, for messages
    keyword: str  # APScheduler's CronTrigger keyword
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] means low + i


_SECOND = _Field("second", "second", 0, 59)
_MINUTE = _Field("minute", "minute", 0, 59)
_HOUR = _Field("hour", "hour", 0, 23)
_DAY = _Field("day-of-month", "day", 1, 31)
_MONTH = _Field(
    "month", "month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
)
# Crontab numbering: 0 and 7 are Sunday. APScheduler 3.x numbers Monday 0; _weekday_expr translates.
_WEEKDAY = _Field("day-of-week", "day_of_week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))

_FIVE = (_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)
_SIX = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)

#: The ``@`` shortcuts and the 5-field specs they stand for.
SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# The most days each month can have (February: leap years), to reject dates that never occur.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_EVERY = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")


def _zone(name: object) -> tzinfo:
    """Return the timezone called ``name`` (an IANA name such as ``"Europe/Paris"``, or a tzinfo)."""
    if isinstance(name, tzinfo):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"timezone must be an IANA timezone name such as 'Europe/Paris', not {name!r}")
    if name == "UTC":
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"unknown timezone {name!r}; give an IANA timezone name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _value(token: str, field: _Field, spec: str) -> int:
    if token.isdigit() and token.isascii():
        number = int(token)
    elif token.lower() in field.names:
        number = field.low + field.names.index(token.lower())
    else:
        known = f" or a name ({'/'.join(field.names)})" if field.names else ""
        raise CronSpecError(f"cron spec {spec!r}: {field.name} field: {token!r} is not a number{known}")
    if not field.low <= number <= field.high:
        raise CronSpecError(
            f"cron spec {spec!r}: {field.name} field: {number} is out of range {field.low}-{field.high}"
        )
    return number


def _parse_field(text: str, field: _Field, spec: str) -> set[int]:
    """Return the values ``text`` selects in ``field`` (crontab syntax: ``*``, ``a``, ``a-b``, ``/step``, lists)."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronSpecError(f"cron spec {spec!r}: {field.name} field {text!r} has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isdigit() and step_text.isascii()) or int(step_text) < 1:
                raise CronSpecError(
                    f"cron spec {spec!r}: {field.name} field: step {step_text!r} in {item!r} "
                    "must be a whole number >= 1"
                )
            step = int(step_text)
        if base == "*" or (base == "?" and field in (_DAY, _WEEKDAY)):
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, field, spec), _value(last, field, spec)
            if field is _WEEKDAY and high == 0 and low > 0:
                high = 7  # "fri-sun": Sunday ends a range as 7
            if low > high:
                raise CronSpecError(
                    f"cron spec {spec!r}: {field.name} field: range {base!r} goes backwards ({low} > {high})"
                )
        else:
            low = _value(base, field, spec)
            high = field.high if slash else low  # "a/step" means a, a+step, ... up to the field's end
        values.update(range(low, high + 1, step))
    if field is _WEEKDAY and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def _expr(values: set[int], low: int, high: int) -> str:
    """Return APScheduler's expression for exactly ``values``: ``*`` or ranges and numbers."""
    if len(values) == high - low + 1:
        return "*"
    parts: list[str] = []
    ordered = sorted(values)
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _weekday_expr(values: set[int]) -> str:
    # Crontab 0 = Sunday ... 6 = Saturday; APScheduler 3.x 0 = Monday ... 6 = Sunday.
    return _expr({(day - 1) % 7 for day in values}, 0, 6)


def _parse_every(spec: str, rest: str) -> BaseTrigger:
    match = _EVERY.fullmatch(rest.strip())
    if not rest.strip() or match is None:
        raise CronSpecError(
            f"cron spec {spec!r}: @every takes a duration of whole hours, minutes and seconds, e.g. '@every 1h30m'"
        )
    seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
    if seconds < 1:
        raise CronSpecError(f"cron spec {spec!r}: @every needs a duration of at least 1s")
    # Anchored to the epoch, not to the start of a process, so every process has the same ticks.
    return IntervalTrigger(seconds=seconds, start_date=_EPOCH, timezone=_UTC)


def parse_spec(spec: str, timezone: str | tzinfo = "UTC") -> BaseTrigger:
    """Parse a cron spec into an APScheduler trigger whose ticks are the same in every process.

    ``spec``: 5 fields (minute hour day-of-month month day-of-week, as in crontab: 0 or 7 is
    Sunday), 6 fields (second first), a shortcut (``@yearly``, ``@annually``, ``@monthly``,
    ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``), or ``@every <duration>`` such as
    ``@every 90s`` or ``@every 1h30m`` (ticks at whole multiples of it since the Unix epoch).
    As in crontab, when both day fields are restricted (neither starts with ``*``) a day
    matching either one is a tick day. ``timezone`` is the IANA name the fields are read in.
    Raises ``CronSpecError`` naming what is wrong, ``ConfigurationError`` for an unknown timezone.
    """
    if not isinstance(spec, str):
        raise CronSpecError(f"cron spec must be a str, not {type(spec).__name__}")
    zone = _zone(timezone)
    text = spec.strip()
    if text.startswith("@"):
        word, _, rest = text.partition(" ")
        if word.lower() == "@every":
            return _parse_every(spec, rest)
        expanded = SHORTCUTS.get(word.lower())
        if expanded is None or rest.strip():
            accepted = ", ".join([*SHORTCUTS, "@every <duration>"])
            raise CronSpecError(f"cron spec {spec!r}: unknown shortcut; accepted: {accepted}")
        text = expanded
    parts = text.split()
    fields: tuple[_Field, ...]
    if len(parts) == 5:
        fields = _FIVE
    elif len(parts) == 6:
        fields = _SIX
    else:
        raise CronSpecError(
            f"cron spec {spec!r} has {len(parts)} fields; expected 5 (minute hour day-of-month month day-of-week), "
            "6 (second first) or a shortcut such as @hourly"
        )
    values = {field.keyword: _parse_field(part, field, spec) for part, field in zip(parts, fields, strict=True)}
    values.setdefault("second", {0})
    day_restricted = not parts[-3].startswith(("*", "?"))
    weekday_restricted = not parts[-1].startswith(("*", "?"))
    if day_restricted:
        longest = max(_MONTH_DAYS[month - 1] for month in values["month"])
        if min(values["day"]) > longest:
            raise CronSpecError(
                f"cron spec {spec!r}: day-of-month {parts[-3]!r} never occurs in month(s) {parts[-2]!r}"
            )
    common = {
        "second": _expr(values["second"], 0, 59),
        "minute": _expr(values["minute"], 0, 59),
        "hour": _expr(values["hour"], 0, 23),
        "month": _expr(values["month"], 1, 12),
        "timezone": zone,
    }
    day = _expr(values["day"], 1, 31)
    weekday = _weekday_expr(values["day_of_week"])
    try:
        if day_restricted and weekday_restricted:
            # Crontab's rule: either day field may match. APScheduler requires both, so: two triggers.
            return OrTrigger(
                [CronTrigger(day=day, day_of_week="*", **common), CronTrigger(day="*", day_of_week=weekday, **common)]
            )
        return CronTrigger(day=day, day_of_week=weekday, **common)
    except ValueError as exc:  # pragma: no cover - the fields were validated above
        raise CronSpecError(f"cron spec {spec!r}: {exc}") from None


# -- ticks as pure functions of time ---------------------------------------------------------


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{name} must be a timezone-aware datetime")
    return value


def next_tick(trigger: BaseTrigger, after: datetime) -> datetime | None:
    """Return the first tick of ``trigger`` strictly after ``after``, in UTC; ``None`` if there is none."""
    _aware(after, "after")
    tick: datetime | None = trigger.get_next_fire_time(None, after + _MICROSECOND)
    return None if tick is None else tick.astimezone(_UTC)


def ticks(trigger: BaseTrigger, start: datetime, end: datetime) -> Iterator[datetime]:
    """Yield the ticks of ``trigger`` from ``start`` (included) to ``end`` (excluded), in UTC, in order.

    Steps from tick to tick the way the running scheduler does, so both agree on every tick
    (daylight-saving changes included).
    """
    _aware(start, "start")
    _aware(end, "end")
    tick: datetime | None = trigger.get_next_fire_time(None, start)
    while tick is not None and tick < end:
        yield tick.astimezone(_UTC)
        tick = trigger.get_next_fire_time(tick, tick)


def tick_job(queue: str, tick: datetime) -> Job:
    """Return the job stored for ``tick`` of the schedule on ``queue``, ready for ``Backend.enqueue_tick``.

    Its payload is ``{"scheduled_at": "<ISO-8601 UTC tick time>"}``; its fingerprint, computed
    from queue and payload, is therefore different for every tick.
    """
    scheduled_at = _aware(tick, "tick").astimezone(_UTC).isoformat()
    return prepare_job(Job(queue=queue, payload={"scheduled_at": scheduled_at}))[0]


# -- queue names ----------------------------------------------------------------------------


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


# -- the scheduler --------------------------------------------------------------------------


class _TickExecutor(BaseExecutor):  # type: ignore[misc]
    """An APScheduler executor that tells the job which ticks are due, and never refuses one.

    APScheduler's executors call ``func(*args)`` without the run time and drop runs past
    ``max_instances`` or ``misfire_grace_time``. This one calls ``func(*args, run_times)`` on one
    thread, in submission order, so ticks are stored in order and a slow store delays ticks
    instead of dropping them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neoq-cron-tick")
        self._guard = threading.Lock()
        self._closed = False

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func(*args)`` on the tick thread after what was submitted before; ignored once shut down."""
        with self._guard:
            # The scheduler thread may still submit once while shutdown() runs; the pool is gone then.
            if not self._closed:
                self._pool.submit(_logged, func, *args)

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self.submit(job.func, *job.args, list(run_times))

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:  # pragma: no cover - see submit_job
        self.submit_job(job, run_times)

    def shutdown(self, wait: bool = True) -> None:
        with self._guard:
            self._closed = True
        self._pool.shutdown(wait=wait)


def _logged(func: Callable[..., None], *args: Any) -> None:
    # What the tick thread runs would otherwise end in a Future nobody reads: never silently.
    try:
        func(*args)
    except BaseException:
        logger.exception("neoq cron: storing ticks failed")


class _Scheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler's background scheduler, its thread named like every neoq thread."""

    def _process_jobs(self) -> float | None:
        # APScheduler's loop calls this with nothing around it: an exception here (a trigger that
        # fails) would end the thread, and every schedule with it, with nothing logged. A run
        # that failed to be marked done is handed over again; the store keeps each tick once.
        try:
            result: float | None = super()._process_jobs()
        except Exception:
            logger.exception("neoq cron: the scheduler failed; it looks again in %.0fs", _RETRY_MAX)
            return _RETRY_MAX
        return result

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        # BackgroundScheduler always names its thread "APScheduler"; rename it so neoq's thread checks
        # see it. The attribute is private: if it ever moves, the name stays and stop() still joins it.
        thread = getattr(self, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = "neoq-cron"


class CronScheduler:
    """Fires the cron schedules of one client and stores each tick as a job, once across processes.

    Created by ``Neoq.start_cron``. One APScheduler ``BackgroundScheduler`` thread (``neoq-cron``)
    decides when ticks are due; one thread (``neoq-cron-tick``) stores them through
    ``Backend.enqueue_tick``, retrying while the store fails, for up to ``grace`` seconds after
    the tick. ``stop()`` ends both threads.
    """

    def __init__(self, client: Neoq, *, clock: Clock | None = None, grace: float = CRON_GRACE) -> None:
        self._backend = client.backend
        self._clock = clock or SYSTEM_CLOCK
        self._grace = float(grace)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._executor = _TickExecutor()
        self._scheduler = _Scheduler(
            timezone=_UTC,
            executors={"default": self._executor},
            # _TickExecutor already hands over every run time; these say the same to APScheduler, so no
            # run is merged (coalesce) or counted as missed (misfire) on its side either.
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1_000_000},
        )
        self._started = False
        self._store_away = False
        self._schedules: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<CronScheduler schedules={self._schedules!r}>"

    @property
    def schedules(self) -> dict[str, str]:
        """The specs by queue (a copy)."""
        return dict(self._schedules)

    def add(self, queue: str, spec: str, trigger: BaseTrigger, *, catch_up: float | None = None) -> None:
        """Start enqueueing the ticks of ``trigger`` on ``queue`` from now on.

        ``catch_up`` (seconds): first enqueue the ticks of the last ``catch_up`` seconds that
        come after the latest tick any process stored for ``queue`` (none if no tick was ever
        stored). Raises ``ConfigurationError`` for a queue that already has a schedule or after
        ``stop()``.
        """
        with self._lock:
            if self._stopping.is_set():
                raise ConfigurationError("the cron scheduler was stopped")
            if queue in self._schedules:
                raise ConfigurationError(f"queue {queue!r} already has a cron schedule")
            now = self._clock.now()
            first = next_tick(trigger, now - _MICROSECOND)  # the first tick at or after now
            if first is None:
                raise CronSpecError(f"cron spec {spec!r} has no tick after {now.isoformat()}")
            self._schedules[queue] = spec
            if catch_up is not None and catch_up > 0:
                # Queued on the tick thread ahead of the live ticks; reads the store there, not here.
                self._executor.submit(self._catch_up, queue, trigger, now, catch_up)
            if not self._started:
                self._scheduler.start()
                self._started = True
            self._scheduler.add_job(
                self._store_ticks, trigger=trigger, args=(queue,), id=queue, name=queue, next_run_time=first
            )
        logger.info("neoq cron: queue %r on %r, first tick at %s", queue, spec, first.isoformat())

    def stop(self) -> None:
        """Stop firing ticks and end the scheduler's threads. Calling it again does nothing.

        Ticks already due are still stored (once, without retries); then both threads are joined.
        """
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            started = self._started
        if started:
            # Shuts the executor down first (joining the tick thread), then joins the scheduler thread.
            self._scheduler.shutdown(wait=True)
        else:
            self._executor.shutdown(wait=True)

    # -- on the tick thread --------------------------------------------------------------

    def _store_ticks(self, queue: str, run_times: Sequence[datetime] = ()) -> None:
        # The default only satisfies APScheduler's check of the job's arguments at add_job();
        # _TickExecutor always passes the run times.
        for tick in run_times:
            self._store_tick(queue, tick.astimezone(_UTC), self._grace)

    def _store_tick(self, queue: str, tick: datetime, give_up_after: float) -> None:
        pause = _RETRY_FIRST
        while True:
            if self._store_away and self._stopping.is_set():
                logger.error("neoq cron: tick %s of queue %r not enqueued: stopping", tick.isoformat(), queue)
                return
            late = (self._clock.now() - tick).total_seconds()
            if late > give_up_after:
                logger.error(
                    "neoq cron: tick %s of queue %r not enqueued: %.0fs late, past the limit of %.0fs",
                    tick.isoformat(),
                    queue,
                    late,
                    give_up_after,
                )
                return
            try:
                job_id = self._backend.enqueue_tick(tick_job(queue, tick), queue, tick)
            except DuplicateJobError as exc:
                logger.error("neoq cron: tick %s of queue %r not enqueued: %s", tick.isoformat(), queue, exc)
                return
            except NeoqError as exc:
                if self._stopping.is_set():
                    # One failure while stopping means the store is away: skip the remaining ticks
                    # rather than make shutdown wait for each of them to fail in turn.
                    self._store_away = True
                    logger.error(
                        "neoq cron: tick %s of queue %r not enqueued while stopping: %s", tick.isoformat(), queue, exc
                    )
                    return
                logger.warning(
                    "neoq cron: enqueueing tick %s of queue %r failed (%s); retrying in %.2fs",
                    tick.isoformat(),
                    queue,
                    exc,
                    pause,
                )
                self._stopping.wait(pause)
                pause = min(_RETRY_MAX, pause * 2)
                continue
            except BaseException:  # a backend raising what it must not: this tick is lost, not the thread
                logger.exception("neoq cron: backend failed to enqueue tick %s of queue %r", tick.isoformat(), queue)
                return
            if job_id is None:
                logger.debug("neoq cron: tick %s of queue %r was already enqueued", tick.isoformat(), queue)
            else:
                logger.debug("neoq cron: tick %s of queue %r enqueued as job %s", tick.isoformat(), queue, job_id)
            return

    def _catch_up(self, queue: str, trigger: BaseTrigger, now: datetime, window: float) -> None:
        try:
            last = self._backend.last_tick(queue)
        except NeoqError as exc:
            logger.error("neoq cron: cannot catch up queue %r: reading its last tick failed: %s", queue, exc)
            return
        if last is None:
            logger.info("neoq cron: queue %r has no earlier tick; nothing to catch up", queue)
            return
        start = max(last + _MICROSECOND, now - timedelta(seconds=window))
        missed = list(ticks(trigger, start, now))
        if missed:
            logger.warning(
                "neoq cron: queue %r catching up %d missed tick(s) from %s", queue, len(missed), missed[0].isoformat()
            )
        for tick in missed:
            if self._stopping.is_set():
                return
            self._store_tick(queue, tick, window + self._grace)
