"""Reading cron specs: crontab fields, ``@`` shortcuts, ``@every`` and the timezone, checked in full.

Pure syntax and meaning, no scheduler: ``read_spec`` turns the text users write into the values
each field selects (``CronFields``) or an interval (``Every``), and raises ``CronSpecError``
naming what is wrong. ``neoq.cron.triggers`` builds APScheduler's triggers from what it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigurationError, CronSpecError

__all__ = ["SHORTCUTS", "CronFields", "Every", "read_spec", "read_timezone"]

_UTC = timezone.utc


@dataclass(frozen=True)
class _Field:
    name: str  # as users know it, for messages
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] means low + i


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
# Crontab numbering: 0 and 7 are Sunday (7 is read as 0).
_WEEKDAY = _Field("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))

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


@dataclass(frozen=True)
class CronFields:
    """A crontab spec read into the values each of its fields selects, in crontab numbering."""

    #: The seconds (0-59); ``{0}`` for a 5-field spec.
    second: frozenset[int]
    #: The minutes (0-59).
    minute: frozenset[int]
    #: The hours (0-23).
    hour: frozenset[int]
    #: The days of the month (1-31).
    day: frozenset[int]
    #: The months (1-12).
    month: frozenset[int]
    #: The days of the week, 0 = Sunday ... 6 = Saturday.
    weekday: frozenset[int]
    #: Whether the day-of-month field is restricted (does not start with ``*`` or ``?``). As in
    #: crontab, when both day fields are restricted a day matching either one is a tick day.
    day_restricted: bool
    #: Whether the day-of-week field is restricted (does not start with ``*`` or ``?``).
    weekday_restricted: bool
    #: The timezone the fields are read in.
    zone: tzinfo


@dataclass(frozen=True)
class Every:
    """An ``@every <duration>`` spec: a tick at each whole multiple of ``seconds`` since the Unix epoch."""

    #: The interval, in whole seconds (at least 1).
    seconds: int


def read_timezone(name: object) -> tzinfo:
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


def _parse_field(text: str, field: _Field, spec: str) -> frozenset[int]:
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
    return frozenset(values)


def _read_every(spec: str, rest: str) -> Every:
    match = _EVERY.fullmatch(rest.strip())
    if not rest.strip() or match is None:
        raise CronSpecError(
            f"cron spec {spec!r}: @every takes a duration of whole hours, minutes and seconds, e.g. '@every 1h30m'"
        )
    seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
    if seconds < 1:
        raise CronSpecError(f"cron spec {spec!r}: @every needs a duration of at least 1s")
    return Every(seconds)


def read_spec(spec: str, timezone: str | tzinfo = "UTC") -> CronFields | Every:
    """Read a cron spec: the values its fields select (``CronFields``), or ``Every`` for ``@every``.

    ``spec``: 5 fields (minute hour day-of-month month day-of-week, as in crontab: 0 or 7 is
    Sunday), 6 fields (second first), a shortcut (``@yearly``, ``@annually``, ``@monthly``,
    ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``), or ``@every <duration>`` such as
    ``@every 90s`` or ``@every 1h30m``. ``timezone`` is the IANA name the fields are read in
    (checked for ``@every`` too, whose ticks are counted in UTC). Raises ``CronSpecError``
    naming what is wrong, ``ConfigurationError`` for an unknown timezone.
    """
    if not isinstance(spec, str):
        raise CronSpecError(f"cron spec must be a str, not {type(spec).__name__}")
    zone = read_timezone(timezone)
    text = spec.strip()
    if text.startswith("@"):
        word, _, rest = text.partition(" ")
        if word.lower() == "@every":
            return _read_every(spec, rest)
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
    values = [_parse_field(part, field, spec) for part, field in zip(parts, fields, strict=True)]
    if len(values) == 5:
        values.insert(0, frozenset({0}))
    second, minute, hour, day, month, weekday = values
    day_restricted = not parts[-3].startswith(("*", "?"))
    if day_restricted:
        longest = max(_MONTH_DAYS[m - 1] for m in month)
        if min(day) > longest:
            raise CronSpecError(
                f"cron spec {spec!r}: day-of-month {parts[-3]!r} never occurs in month(s) {parts[-2]!r}"
            )
    return CronFields(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        weekday=weekday,
        day_restricted=day_restricted,
        weekday_restricted=not parts[-1].startswith(("*", "?")),
        zone=zone,
    )
