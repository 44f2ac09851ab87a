"""Rows of ``neoq_jobs`` as ``Job`` objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import TupleRow

from ...job import Job, JobStatus
from .common import _utc


def _job_from_row(row: TupleRow) -> Job:
    return Job(
        queue=row[1],
        payload=row[3],
        run_after=_utc(row[5]),
        deadline=_utc(row[6]),
        max_retries=row[7],
        fingerprint=row[2],
        id=str(row[0]),
        status=JobStatus(row[4]),
        retries=row[8],
        attempts=row[9],
        error=row[10],
        created_at=_utc(row[11]),
        ran_at=_utc(row[12]),
        finished_at=_utc(row[13]),
    )


def _claimed_job(row: tuple[Any, ...], job_id: str, attempts: int, ran_at: datetime | None) -> Job:
    return Job(
        queue=row[1],
        payload=row[3],
        run_after=_utc(row[4]),
        deadline=_utc(row[5]),
        max_retries=row[6],
        fingerprint=row[2],
        id=job_id,
        status=JobStatus.RUNNING,
        retries=row[7],
        attempts=attempts,
        error=row[8],
        created_at=_utc(row[9]),
        ran_at=_utc(ran_at),
    )
