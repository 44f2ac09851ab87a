"""Rows of ``neoq_jobs`` as ``Job``s, and the times they hold (integer microseconds since 1970, UTC)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from ...job import Job, JobStatus

__all__ = ["COLUMNS", "NCOLUMNS", "STATE", "job_from_row", "micros", "now_micros", "values", "when"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

#: The columns ``job_from_row`` reads, in order (the state last).
COLUMNS = (
    "id, queue, fingerprint, payload, run_after, deadline, max_retries, retries, attempts, error, "
    "created_at, ran_at, finished_at, result, traceback, progress, progress_note, priority, snoozes"
)
#: How many columns ``COLUMNS`` names: what a query selects after them starts at this index.
NCOLUMNS = 19

#: The status a job reports: a 'new' job with a live lease is running (its holder renews it).
STATE = "CASE WHEN status = 'new' AND lease_owner IS NOT NULL AND run_after > :now THEN 'running' ELSE status END"

_decode = json.JSONDecoder().decode
_set_state = object.__setattr__


def now_micros() -> int:
    """The host's clock: every process sharing the file compares against it."""
    return time.time_ns() // 1000


def micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def when(value: int | None) -> datetime | None:
    # timedelta's positional arguments (days, seconds, microseconds): a third cheaper than a keyword.
    return None if value is None else _EPOCH + timedelta(0, 0, value)


#: Each status's member, by its stored text (a dict look-up costs a fifth of ``JobStatus(text)``).
_STATUSES = {status.value: status for status in JobStatus}


def job_from_row(row: sqlite3.Row | tuple[Any, ...], status: str, *, run_after: datetime | None = None) -> Job:
    """A ``Job`` from the columns of ``COLUMNS``, with ``status`` (and ``run_after``, when given).

    Every claimed job is made here: its dict is written whole, in field order (``Job.__init__``
    would check 19 keywords against the fields and copy them over the defaults, at twice the cost).
    """
    created_at, ran_at = row[10], row[11]
    result = row[13]
    job: Job = object.__new__(Job)
    _set_state(
        job,
        "__dict__",
        {
            "queue": row[1],
            "payload": _decode(row[3]),
            "run_after": run_after or when(row[4]),
            "deadline": None if row[5] is None else when(row[5]),
            "max_retries": row[6],
            "fingerprint": row[2],
            "priority": row[17],
            "unique_for": None,
            "id": str(row[0]),
            "status": _STATUSES[status],
            "retries": row[7],
            "attempts": row[8],
            "snoozes": row[18],
            "error": row[9],
            "created_at": None if created_at is None else _EPOCH + timedelta(0, 0, created_at),
            "ran_at": None if ran_at is None else _EPOCH + timedelta(0, 0, ran_at),
            "finished_at": None if row[12] is None else when(row[12]),
            "result": None if result is None else _decode(result),
            "traceback": row[14],
            "progress": row[15],
            "progress_note": row[16],
        },
    )
    return job


def values(rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """The ``VALUES`` rows of a multi-row statement for ``rows`` (tuples of one width), and their
    parameters: a column that is None in every row is written ``NULL`` instead of a parameter.

    Python's sqlite3 (3.11) binds None only after looking for an adapter, raising and clearing an
    ``AttributeError`` on the way: about 2,000 instructions a None, as much as a job's row costs to
    insert. An enqueue's deadline and max_retries, an outcome's error, traceback and retries are None
    in most batches.
    """
    width = len(rows[0])
    keep = [column for column in range(width) if any(row[column] is not None for row in rows)]
    if len(keep) == width:
        row_sql = "(" + ", ".join("?" * width) + ")"
        params = [value for row in rows for value in row]
    else:
        row_sql = "(" + ", ".join("?" if column in keep else "NULL" for column in range(width)) + ")"
        params = [row[column] for row in rows for column in keep]
    return ",".join([row_sql] * len(rows)), params
