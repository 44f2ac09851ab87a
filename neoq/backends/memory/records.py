"""The memory backend's stored jobs, and the copies readers and handlers get of them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ...job import Job, JobStatus, encode_payload
from ...job import copy_job as _copy

__all__ = ["Record", "count_statuses", "flat_copy", "key_of", "payload_copy", "shown", "status_of"]

_NEW = JobStatus.NEW
_RUNNING = JobStatus.RUNNING


class Record:
    """One stored job: its ``Job``, its payload kept private, and the state of its scheduling.

    A claimed job stays ``NEW`` in ``job`` with ``claimed`` set: readers report it ``RUNNING``
    (``status_of``), so the claim writes nothing more than ``attempts`` and ``ran_at``.
    """

    __slots__ = ("claimed", "entry", "finished_at", "flat", "job", "payload_text", "result_text", "seq", "version")

    def __init__(self, job: Job, seq: int) -> None:
        self.job = job  # each read gets its own payload: a copy of ``flat``, or decoded from the text
        #: A private dict whose values are all immutable (str, int, float, bool, None): a shallow
        #: copy of it is a full copy, and cheaper than decoding. ``None`` for any other payload.
        self.flat = flat = flat_copy(job.payload)
        #: The payload as JSON text, when it is not flat.
        self.payload_text = None if flat is not None else encode_payload(job.payload)
        self.seq = seq
        #: Bumped by every new scheduling of the job (a retry, a cancellation): older entries are stale.
        self.version = 0
        #: The entry of the job's current scheduling (``None`` before the first).
        self.entry: tuple[int, float, int, int] | None = None
        self.claimed = False
        self.finished_at: datetime | None = None  # when it last became PROCESSED, FAILED or CANCELLED
        #: The JSON text of the handler's return value (``job.result`` stays ``None``: readers decode this).
        self.result_text: str | None = None

    def payload(self) -> Any:
        """A fresh payload: a copy of the flat dict, or decoded from the text."""
        return payload_copy(self.payload_text, self.flat)


#: The exact types whose values JSON keeps as they are and that cannot change in place.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_INF = float("inf")


def flat_copy(payload: Any) -> dict[str, Any] | None:
    """Return a private copy of ``payload`` if it is a dict of immutable JSON scalars, else None.

    Such a payload's JSON round trip gives back an equal dict (same keys, order and values), so
    a shallow copy isolates a reader as well as decoding would.
    """
    if type(payload) is not dict:
        return None
    scalars = _SCALARS
    for key, value in payload.items():
        if type(key) is not str or type(value) not in scalars:
            return None
        if type(value) is float and (value != value or value in (_INF, -_INF)):
            return None  # NaN and infinities: JSON text keeps them only as non-standard tokens
    return dict(payload)


def payload_copy(text: str | None, flat: dict[str, Any] | None) -> Any:
    """Return a fresh payload for a reader: a copy of the flat dict, or decoded from the text."""
    if flat is not None:
        return dict(flat)
    assert text is not None
    return json.loads(text)


def status_of(record: Record) -> JobStatus:
    """The record's status as readers see it: a claimed job is stored ``NEW`` and reads ``RUNNING``."""
    status = record.job.status
    return _RUNNING if status is _NEW and record.claimed else status


def shown(record: Record) -> Job:
    """A copy of the record's job for a reader (the store's lock held), with its status as
    ``status_of`` reads it and its ``finished_at`` (None until that status is final). The caller
    sets its payload, outside the lock."""
    job = _copy(record.job)
    state = job.__dict__
    status = state["status"] = status_of(record)
    state["finished_at"] = None if status is _NEW or status is _RUNNING else record.finished_at
    if record.result_text is not None:
        state["result"] = json.loads(record.result_text)
    return job


_STATS_KEYS = ("new", "running", "processed", "failed", "cancelled")


def count_statuses(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """``stats()`` of these records (the store's lock held): counts by queue and status as read."""
    result: dict[str, dict[str, int]] = {}
    for record in records:
        queue = record.job.queue
        counts = result.get(queue)
        if counts is None:
            counts = result[queue] = dict.fromkeys(_STATS_KEYS, 0)
        counts[status_of(record).value] += 1
    return result


def key_of(job: Job) -> tuple[str, str]:
    """The job's uniqueness key: (queue, fingerprint)."""
    return (job.queue, job.fingerprint or "")
