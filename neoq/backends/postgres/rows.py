"""Rows of ``neoq_jobs`` as ``Job`` objects.

Every query that returns jobs (the claims, ``job_view``: get_job and list_jobs) starts its row
with the same ten columns, in this order: id, queue, fingerprint, payload, run_after, deadline,
max_retries, retries, error, created_at. What follows them differs; ``_job`` reads the ten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...job import Job, JobStatus
from .common import _utc


def _job(
    row: tuple[Any, ...],
    job_id: str,
    status: JobStatus,
    attempts: int,
    ran_at: datetime | None,
    finished_at: datetime | None = None,
) -> Job:
    """The one mapping of a job row (its first ten columns) and what the query says beyond them."""
    return Job(
        queue=row[1],
        payload=row[3],
        run_after=_utc(row[4]),
        deadline=_utc(row[5]),
        max_retries=row[6],
        fingerprint=row[2],
        id=job_id,
        status=status,
        retries=row[7],
        attempts=attempts,
        error=row[8],
        created_at=_utc(row[9]),
        ran_at=_utc(ran_at),
        finished_at=_utc(finished_at),
    )


def _job_from_row(row: tuple[Any, ...]) -> Job:
    """A row of ``job_view``: the ten columns, then status, attempts, ran_at, finished_at."""
    return _job(row, str(row[0]), JobStatus(row[10]), row[11], row[12], row[13])


def _claimed_job(row: tuple[Any, ...], job_id: str, attempts: int, ran_at: datetime | None) -> Job:
    """A row a claim locked: running its attempt number ``attempts`` since ``ran_at``."""
    return _job(row, job_id, JobStatus.RUNNING, attempts, ran_at)
