"""The ``Job`` value, its status, and the checks a job passes before it is stored."""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .defaults import (
    EARLIEST_JOB_TIME,
    LATEST_JOB_TIME,
    MAX_FINGERPRINT_LENGTH,
    MAX_JOB_RETRIES,
    MAX_PAYLOAD_DEPTH,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_LENGTH,
    MIN_PRIORITY,
)
from .errors import ConfigurationError, InvalidJobError
from .jsontext import FLAT_ENCODE, canonical_json, compact_json
from .outcomes import error_text
from .uniqueness import check_unique_for

__all__ = [
    "Job",
    "JobStatus",
    "canonical_json",
    "error_text",
    "fingerprint",
    "prepare_job",
    "to_seconds",
]


class JobStatus(str, enum.Enum):
    """Where a job is in its life."""

    #: Waiting: to run for the first time, or for a retry.
    NEW = "new"
    #: An attempt is in progress right now, in a live process. A job whose process died reads
    #: ``NEW`` again once the store notices (PostgreSQL: at once; in lease mode, when the lease ends).
    RUNNING = "running"
    #: An attempt succeeded. Terminal until ``retry_job``.
    PROCESSED = "processed"
    #: Retries exhausted, or the deadline passed. Terminal until ``retry_job``.
    FAILED = "failed"
    #: Cancelled by ``cancel_job``, whether it was waiting or running. Terminal until ``retry_job``.
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: ``Job``'s default payload: the constructor gives each job a fresh ``{}`` in its place.
_NO_PAYLOAD: Mapping[str, Any] = MappingProxyType({})
_ZERO = 0  # compared by identity (``is``): the int 0, not ``False`` nor ``0.0``


# init=False: the class writes its own __init__ (below), with the signature the dataclass would make.
@dataclass(frozen=True, kw_only=True, init=False)
class Job:
    """A unit of work: a JSON payload for the handler of a queue.

    Applications set ``queue``, ``payload`` and optionally ``run_after``, ``deadline``, ``max_retries``,
    ``fingerprint``, ``priority`` and ``unique_for``; the backend sets the rest. Limits, the same on
    every backend: ``enqueue`` raises ``InvalidJobError`` naming the field, and stores nothing, for a
    ``run_after`` or ``deadline`` outside 1970-01-01 to 9000-01-01 UTC, a ``max_retries`` that is not
    an ``int`` from 0 to 1,000,000, a ``fingerprint`` that is empty, over 256 characters, or holds
    NUL or a lone surrogate, a ``priority`` not an ``int`` from -100 to 100, a ``unique_for`` <= 0.
    """

    #: The queue whose handler runs the job: non-empty, at most 128 characters.
    queue: str
    #: JSON-serialisable mapping with string keys, given to the handler.
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: Not run before this aware datetime (1970-01-01 to 9000-01-01 UTC); ``None`` means now.
    run_after: datetime | None = None
    #: The job must finish by this aware datetime (1970-01-01 to 9000-01-01 UTC): not started
    #: after it, stopped at it.
    deadline: datetime | None = None
    #: Retries allowed after the first attempt (0 to 1,000,000); ``None`` means the handler's, else 25.
    max_retries: int | None = None
    #: Uniqueness key among waiting jobs of the queue (at most 256 characters, no NUL, no lone
    #: surrogate); ``None`` means computed from queue and payload.
    fingerprint: str | None = None
    #: Higher runs first among the queue's due jobs (then ``run_after``, then enqueue order): an
    #: ``int`` from -100 to 100, as in ``django.tasks``. Needs the ``"priority"`` capability when not 0.
    priority: int = 0
    #: Refuse the enqueue (``DuplicateJobError``) if the same queue and fingerprint were enqueued with a
    #: ``unique_for`` less than this long ago (seconds, or a ``timedelta``), whatever became of that job.
    unique_for: timedelta | float | None = None
    #: Set by the backend: the job's id.
    id: str | None = None
    #: Set by the backend: see ``JobStatus``.
    status: JobStatus = JobStatus.NEW
    #: Retries scheduled so far: 0 on the first run, 1 while waiting for and during the first retry.
    retries: int = 0
    #: Attempts started so far, counted even when a worker dies mid-attempt (a neoq addition).
    attempts: int = 0
    #: Set by the backend: attempts that ended in ``raise neoq.Snooze`` (counted in ``attempts`` too).
    snoozes: int = 0
    #: ``"<ExceptionClass>: <message>"`` of the last failed attempt; ``None`` once one succeeds.
    error: str | None = None
    #: Set by the backend: when the job was stored (aware UTC).
    created_at: datetime | None = None
    #: Set by the backend: when the latest attempt started (aware UTC).
    ran_at: datetime | None = None
    #: Set by the backend: when the job became ``PROCESSED``, ``FAILED`` or ``CANCELLED`` (aware UTC):
    #: the end of its last attempt, or its cancellation. ``None`` while ``NEW`` or ``RUNNING``.
    finished_at: datetime | None = None
    #: What the handler returned (decoded from the JSON it is stored as); ``None`` when it returned
    #: ``None`` or has not finished. Left out of the repr (it may be large), as ``traceback`` is.
    result: Any = field(default=None, repr=False)
    #: The formatted traceback of the last failed attempt (for a timeout: the handler's stack when its
    #: time ran out); ``None`` once one succeeds.
    traceback: str | None = field(default=None, repr=False)
    #: The latest ``job_context().progress()`` report, from 0.0 to 1.0; ``None`` before any.
    progress: float | None = None
    #: The note of that report, if it had one.
    progress_note: str | None = None

    if TYPE_CHECKING:  # the signature the dataclass would make; the one that runs is below

        def __init__(
            self,
            *,
            queue: str,
            payload: Mapping[str, Any] = _NO_PAYLOAD,
            run_after: datetime | None = None,
            deadline: datetime | None = None,
            max_retries: int | None = None,
            fingerprint: str | None = None,
            priority: int = 0,
            unique_for: timedelta | float | None = None,
            id: str | None = None,  # noqa: A002 - the field's name
            status: JobStatus = JobStatus.NEW,
            retries: int = 0,
            attempts: int = 0,
            snoozes: int = 0,
            error: str | None = None,
            created_at: datetime | None = None,
            ran_at: datetime | None = None,
            finished_at: datetime | None = None,
            result: Any = None,
            traceback: str | None = None,
            progress: float | None = None,
            progress_note: str | None = None,
        ) -> None: ...

    else:

        def __init__(self, *, queue, payload=_NO_PAYLOAD, **given):
            # A third of the cost of binding 21 defaults and setting each field: a copy of the defaults
            # (in field order) becomes the instance's dict. inspect shows the full signature (below).
            state = _DEFAULTS.copy()
            state["queue"] = queue
            state["payload"] = {} if payload is _NO_PAYLOAD else payload
            if given:
                if not given.keys() <= _DEFAULTS.keys():
                    name = next(name for name in given if name not in _DEFAULTS)
                    raise TypeError(f"Job.__init__() got an unexpected keyword argument {name!r}")
                state.update(given)
            if type(self) is Job:
                _set_state(self, "__dict__", state)
            else:  # a subclass may have set attributes of its own before calling this
                self.__dict__.update(state)


_set_state = object.__setattr__
#: Every field's default, in field order (``queue`` and ``payload`` are always replaced).
_DEFAULTS: dict[str, Any] = {f.name: None if f.default is MISSING else f.default for f in fields(Job)}


def _init_signature() -> inspect.Signature:
    """The signature of ``Job.__init__`` as the dataclass would make it."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in fields(Job):
        default = _NO_PAYLOAD if f.name == "payload" else inspect.Parameter.empty if f.default is MISSING else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.type))
    return inspect.Signature(params, return_annotation="None")


Job.__init__.__signature__ = _init_signature()  # type: ignore[attr-defined]


def to_seconds(value: timedelta | float | int, name: str) -> float:
    """Return ``value`` (a ``timedelta`` or a number of seconds) as float seconds.

    Raises ``TypeError`` naming ``name`` for anything else; callers turn it into their own error.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a timedelta or a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        raise TypeError(f"{name} must be a finite number of seconds, not {value!r}")
    return float(value)


def fingerprint(queue: str, payload: Mapping[str, Any]) -> str:
    """Return the stable hex digest of ``queue`` and the canonical JSON of ``payload``.

    The same on every process, machine and Python version.
    """
    return _fingerprint_text(queue, canonical_json(payload))


def validate_queue_name(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name, else raise ``InvalidJobError``."""
    if not isinstance(queue, str):
        raise InvalidJobError(f"queue must be a str, not {type(queue).__name__}")
    if not queue or not queue.strip():
        raise InvalidJobError("queue must be a non-empty name")
    if len(queue) > MAX_QUEUE_NAME_LENGTH:
        raise InvalidJobError(f"queue name is {len(queue)} characters; the limit is {MAX_QUEUE_NAME_LENGTH}")
    if "\x00" in queue:
        raise InvalidJobError("queue name must not contain NUL characters")
    if not queue.isascii():
        _check_utf8(queue, "queue name")
    return queue


def _check_utf8(text: str, what: str) -> None:
    # A lone surrogate ("\ud800") is a Python str but no UTF-8: no store (nor JSON) could keep it.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJobError(
            f"{what} contains {text[exc.start]!r}, a lone surrogate that UTF-8 cannot encode"
        ) from None


def _check_aware(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidJobError(f"{name} must be an aware datetime or None, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobError(f"{name} is a naive datetime; give a timezone-aware one (e.g. tzinfo=timezone.utc)")
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        utc = None  # datetime.max in a zone east of UTC, say: out of range either way
    if utc is None or not EARLIEST_JOB_TIME <= utc <= LATEST_JOB_TIME:
        raise InvalidJobError(
            f"{name} {value.isoformat()} is out of range: it must lie between "
            f"{EARLIEST_JOB_TIME:%Y-%m-%d} and {LATEST_JOB_TIME:%Y-%m-%d} UTC"
        )
    return utc


def setting_seconds(value: timedelta | float | int, name: str) -> float:
    """Return a duration setting as float seconds, or raise ``ConfigurationError`` naming ``name``.

    Accepts a ``timedelta`` or a number of seconds; negative values are refused.
    """
    try:
        seconds = to_seconds(value, name)
    except TypeError as exc:
        raise ConfigurationError(str(exc)) from None
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {seconds:g} seconds")
    return seconds


def _check_structure(payload: Mapping[str, Any]) -> None:
    """Refuse what strict JSON would not round-trip; iterative, so depth cannot blow the stack."""
    # json.dumps quietly turns int, float, bool and None keys into strings, which would not
    # round-trip; strict JSON objects have string keys only, at every depth. PostgreSQL's jsonb
    # cannot store U+0000, so it is refused everywhere and every backend round-trips alike.
    stack: list[tuple[Any, str, int]] = [(payload, "payload", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidJobError(f"payload text at {path} contains a NUL character, which JSON stores cannot keep")
        elif isinstance(value, Mapping):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidJobError(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels at {path}")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidJobError(
                        f"payload key {key!r} at {path} is a {type(key).__name__}; JSON object keys must be strings"
                    )
                if "\x00" in key:
                    raise InvalidJobError(f"payload key at {path} contains a NUL character")
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, (list, tuple)):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidJobError(f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels at {path}")
            for index, item in enumerate(value):
                stack.append((item, f"{path}[{index}]", depth + 1))


_NONE = type(None)


def _is_flat(payload: Mapping[str, Any]) -> bool:
    """Return True if ``payload`` is a dict of str keys and JSON scalar values with nothing to refuse.

    The common payload: such a dict needs no structure walk, and its JSON round trip is a
    shallow copy. Anything else (or anything to refuse) returns False for the full checks.
    """
    if type(payload) is not dict:
        return False
    for key, value in payload.items():
        if type(key) is not str or "\x00" in key:
            return False
        kind = type(value)
        if kind is str:
            if "\x00" in value:
                return False
        elif kind is not int and kind is not bool and kind is not _NONE and kind is not float:
            return False
    return True


def encode_payload(payload: object) -> str:
    """Return the JSON text of ``payload`` or raise ``InvalidJobError`` saying what to fix."""
    return _encode_payload(payload)[0]


def _encode_payload(payload: object) -> tuple[str, bool]:
    # The JSON text, and whether the payload is flat (see ``_is_flat``).
    if type(payload) is not dict and not isinstance(payload, Mapping):  # a dict skips the ABC's check
        raise InvalidJobError(f"payload must be a mapping with string keys, not {type(payload).__name__}")
    flat = _is_flat(payload)
    if not flat:
        _check_structure(payload)
    try:
        text = "".join(FLAT_ENCODE(payload, 0)) if flat and FLAT_ENCODE is not None else compact_json(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJobError(f"payload is not JSON-serialisable: {exc}") from None
    if not text.isascii():
        _check_utf8(text, "payload text")
    return text, flat


def _fingerprint_text(queue: str, canonical: str) -> str:
    # canonical is ASCII: its UTF-8 bytes are its ASCII bytes. One call: cheaper than three updates.
    return hashlib.sha256(f"{queue}\x00{canonical}".encode()).hexdigest()


def prepare_job(job: object) -> tuple[Job, str]:
    """Validate ``job`` for storing and return it normalised, with its payload's JSON text.

    The returned job has a fingerprint, UTC datetimes and a payload that is a fresh copy decoded
    from the JSON text, so later changes to the caller's dict change nothing stored. Raises
    ``InvalidJobError`` naming what to fix.
    """
    if not isinstance(job, Job):
        raise InvalidJobError(f"expected a neoq.Job, got {type(job).__name__}")
    validate_queue_name(job.queue)
    text, flat = _encode_payload(job.payload)
    # A flat payload's decoded copy is a shallow copy (its values are immutable scalars).
    payload = dict(job.payload) if flat else json.loads(text)
    run_after = _check_aware(job.run_after, "run_after")
    deadline = _check_aware(job.deadline, "deadline")
    max_retries = job.max_retries
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_JOB_RETRIES
    ):
        raise InvalidJobError(f"max_retries must be an int from 0 to {MAX_JOB_RETRIES:,} or None, not {max_retries!r}")
    priority, unique_for = job.priority, job.unique_for
    if priority is not _ZERO and (priority.__class__ is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY):
        raise InvalidJobError(f"priority must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, not {priority!r}")
    fp = job.fingerprint
    if fp is None:
        # The canonical text of a flat payload with sorted keys and ASCII text is its compact text
        # (the ASCII encoder escapes DEL, U+007F, which the compact one keeps as it is).
        if flat and text.isascii() and "\x7f" not in text and _sorted_keys(payload):
            fp = _fingerprint_text(job.queue, text)
        else:
            fp = fingerprint(job.queue, payload)
    else:
        _check_fingerprint(fp)
    # The fields the backend sets start at their defaults: a copy of those, then the eight given.
    state = _DEFAULTS.copy()
    state["queue"] = job.queue
    state["payload"] = payload
    state["run_after"] = run_after
    state["deadline"] = deadline
    state["max_retries"] = max_retries
    state["fingerprint"] = fp
    state["priority"] = priority
    if unique_for is not None:
        state["unique_for"] = check_unique_for(unique_for)
    if type(job) is not Job:
        return evolve(job, **state), text  # a subclass keeps its own fields
    # The common case skips dataclass machinery: every field is set here.
    prepared = object.__new__(Job)
    _set_state(prepared, "__dict__", state)
    return prepared, text


def _check_fingerprint(fp: object) -> None:
    # The payload's text rules: no store keeps NUL or a lone surrogate in a text column.
    if not isinstance(fp, str) or not fp or len(fp) > MAX_FINGERPRINT_LENGTH:
        raise InvalidJobError(
            f"fingerprint must be a non-empty str of at most {MAX_FINGERPRINT_LENGTH} characters, or None"
        )
    if "\x00" in fp:
        raise InvalidJobError("fingerprint must not contain NUL characters")
    if not fp.isascii():
        _check_utf8(fp, "fingerprint")


def _sorted_keys(payload: dict[str, Any]) -> bool:
    previous = ""
    for key in payload:
        if key < previous:
            return False
        previous = key
    return True


def evolve(job: Job, **changes: Any) -> Job:
    """Return a copy of ``job`` with ``changes``: ``dataclasses.replace`` at a sixth of its cost.

    ``Job`` has no ``__post_init__`` and every field is an ``__init__`` field, so copying the
    instance dict builds the object ``replace`` would; a subclass goes through ``replace``.
    The hot paths (enqueue, claim, settle) copy jobs several times each.
    """
    if type(job) is not Job:
        return replace(job, **changes)
    clone = object.__new__(Job)
    state = job.__dict__.copy()
    state.update(changes)
    _set_state(clone, "__dict__", state)
    return clone


def copy_job(job: Job) -> Job:
    """Return a copy of ``job`` whose ``__dict__`` the caller may change before anyone else sees it.

    For the hot paths that set one or two fields: cheaper than ``evolve``, which takes keywords.
    A subclass is copied through ``replace``.
    """
    if type(job) is not Job:
        return replace(job)
    clone = object.__new__(Job)
    _set_state(clone, "__dict__", job.__dict__.copy())
    return clone
