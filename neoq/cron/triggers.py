"""Ticks as pure functions of time: APScheduler triggers built from specs, and the job of each tick.

Every process must compute the same tick instants, so a trigger comes from the spec alone (cron
fields, or ``@every`` anchored to the Unix epoch), never from when a process started.
``next_tick`` and ``ticks`` step through a trigger the way the running scheduler does.
"""

from __future__ import annotations

from collections.abc import Iterator, Set
from datetime import datetime, timedelta, timezone, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..errors import ConfigurationError, CronSpecError
from ..job import Job, prepare_job
from .spec import Every, read_spec

__all__ = ["next_tick", "parse_spec", "tick_job", "ticks"]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)


def _expr(values: Set[int], low: int, high: int) -> str:
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


def _weekday_expr(values: Set[int]) -> str:
    # Crontab 0 = Sunday ... 6 = Saturday; APScheduler 3.x 0 = Monday ... 6 = Sunday.
    return _expr({(day - 1) % 7 for day in values}, 0, 6)


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
    read = read_spec(spec, timezone)
    if isinstance(read, Every):
        # Anchored to the epoch, not to the start of a process, so every process has the same ticks.
        return IntervalTrigger(seconds=read.seconds, start_date=_EPOCH, timezone=_UTC)
    common = {
        "second": _expr(read.second, 0, 59),
        "minute": _expr(read.minute, 0, 59),
        "hour": _expr(read.hour, 0, 23),
        "month": _expr(read.month, 1, 12),
        "timezone": read.zone,
    }
    day = _expr(read.day, 1, 31)
    weekday = _weekday_expr(read.weekday)
    try:
        if read.day_restricted and read.weekday_restricted:
            # Crontab's rule: either day field may match. APScheduler requires both, so: two triggers.
            return OrTrigger(
                [CronTrigger(day=day, day_of_week="*", **common), CronTrigger(day="*", day_of_week=weekday, **common)]
            )
        return CronTrigger(day=day, day_of_week=weekday, **common)
    except ValueError as exc:  # pragma: no cover - the fields were validated by read_spec
        raise CronSpecError(f"cron spec {spec!r}: {exc}") from None


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
