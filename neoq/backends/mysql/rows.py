"""Rows of ``neoq_jobs`` as ``Job`` objects, and the status every read reports.

A job is stored ``new`` while it waits and while it runs; what a read reports is computed
(``STATE``): ``running`` while a live lease holds it (lease mode: ``lease_owner`` set and
``run_after``, the lease's expiry, still ahead) or while a live session holds its claim
(transaction mode: the claim's marker in ``neoq_claims``, removed by the settle, names a session
of ``information_schema.PROCESSLIST``; a dead worker's session is gone at once). The attempts a
read reports add an attempt in progress (or one whose worker died, not yet counted) to the
counted ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ...job import Job, JobStatus

__all__ = ["JOB_SELECT", "STATE", "db_time", "job_from_row", "utc"]

_UTC = timezone.utc

#: The status a read reports (see the module docstring).
STATE = (
    "CASE WHEN j.status <> 'new' THEN j.status"
    " WHEN j.lease_owner IS NOT NULL AND j.run_after > UTC_TIMESTAMP(6) THEN 'running'"
    " WHEN m.holder IS NOT NULL AND m.holder IN (SELECT ID FROM information_schema.PROCESSLIST) THEN 'running'"
    " ELSE 'new' END"
)

#: The columns ``job_from_row`` reads, in its order; queries append their WHERE.
JOB_SELECT = (
    "SELECT j.id, j.queue, j.fingerprint, j.payload, j.run_after, j.deadline, j.max_retries, j.retries,"
    " j.error, j.created_at, j.attempts + COALESCE(a.attempts, 0) + (m.job_id IS NOT NULL),"
    " COALESCE(m.ran_at, CASE WHEN a.ran_at IS NULL OR j.ran_at > a.ran_at THEN j.ran_at ELSE a.ran_at END),"
    f" j.finished_at, {STATE}, j.result, j.traceback, p.fraction, p.note, j.priority, j.snoozes"
    " FROM neoq_jobs j LEFT JOIN neoq_attempts a ON a.job_id = j.id LEFT JOIN neoq_claims m ON m.job_id = j.id"
    " LEFT JOIN neoq_progress p ON p.job_id = j.id"
)


def utc(value: datetime | None) -> datetime | None:
    """A DATETIME(6) read from a UTC session, as an aware UTC datetime."""
    return None if value is None else value.replace(tzinfo=_UTC)


def db_time(value: datetime | None) -> datetime | None:
    """An aware datetime as the naive UTC value a DATETIME(6) column takes."""
    return None if value is None else value.astimezone(_UTC).replace(tzinfo=None)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def job_from_row(row: Any, status: JobStatus | None = None) -> Job:
    """The ``Job`` of a row of ``JOB_SELECT``; ``status`` overrides the computed one (a claim's RUNNING)."""
    return Job(
        id=str(row[0]),
        queue=_text(row[1]),
        fingerprint=_text(row[2]),
        payload=json.loads(row[3]),
        run_after=utc(row[4]),
        deadline=utc(row[5]),
        max_retries=row[6],
        retries=row[7],
        error=row[8],
        created_at=utc(row[9]),
        attempts=int(row[10]),
        ran_at=utc(row[11]),
        finished_at=utc(row[12]),
        status=status if status is not None else JobStatus(_text(row[13])),
        result=None if row[14] is None else json.loads(row[14]),
        traceback=row[15],
        progress=None if row[16] is None else float(row[16]),
        progress_note=row[17],
        priority=int(row[18]),
        snoozes=int(row[19]),
    )
