"""Rows of ``neoq_jobs`` as ``Job`` objects: the one mapper of both modes.

Every query that returns jobs (the claims of both modes, ``job_view``: get_job and list_jobs)
starts its row with the same ten columns, in this order: id, queue, fingerprint, payload,
run_after, deadline, max_retries, retries, error, created_at. What follows them differs; ``_job``
reads the ten and takes the rest from its caller.

A lease fetch maps many rows at once, so ``_job`` builds the frozen dataclass without its
per-field ``__setattr__`` where it can (``_JOB_TEMPLATE``): 1.2-1.3 us a row against 2.1 us for a
``Job(...)`` call with the same keywords (a micro-benchmark on the dev box).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from ...job import Job, JobStatus

#: The fields ``_job`` sets; the others keep ``Job``'s defaults.
_SET_BY_ROW = frozenset(
    {"queue", "payload", "run_after", "deadline", "max_retries", "fingerprint", "priority", "id", "status"}
    | {"retries", "attempts", "snoozes", "error", "created_at", "ran_at", "finished_at"}
)


def _job_template() -> dict[str, Any] | None:
    """The defaults of the ``Job`` fields a row does not set, if a plain dict copy can build a Job.

    None when ``Job`` grows a ``__post_init__``, ``__slots__`` or an unset field whose default is
    made per instance: then ``_job`` calls ``Job(...)``.
    """
    if hasattr(Job, "__post_init__") or hasattr(Job, "__slots__"):
        return None
    for item in dataclasses.fields(Job):
        if item.name not in _SET_BY_ROW and (item.default_factory is not dataclasses.MISSING or not item.init):
            return None
    return {name: value for name, value in Job(queue="template").__dict__.items() if name not in _SET_BY_ROW}


#: The defaults of the Job fields a row does not set (see _job_template).
_JOB_TEMPLATE = _job_template()

_UTC = timezone.utc


def _job(
    row: tuple[Any, ...],
    job_id: str,
    status: JobStatus,
    attempts: int,
    ran_at: datetime | None,
    finished_at: datetime | None = None,
    priority: int = 0,
    snoozes: int = 0,
) -> Job:
    """The one mapping of a job row (its first ten columns) and what the query says beyond them.

    run_after and created_at are NOT NULL in the table; every time comes out in UTC.
    """
    deadline = row[5]
    values = {
        "queue": row[1],
        "payload": row[3],
        "run_after": row[4].astimezone(_UTC),
        "deadline": None if deadline is None else deadline.astimezone(_UTC),
        "max_retries": row[6],
        "fingerprint": row[2],
        "priority": priority,
        "id": job_id,
        "status": status,
        "retries": row[7],
        "attempts": attempts,
        "snoozes": snoozes,
        "error": row[8],
        "created_at": row[9].astimezone(_UTC),
        "ran_at": None if ran_at is None else ran_at.astimezone(_UTC),
        "finished_at": None if finished_at is None else finished_at.astimezone(_UTC),
    }
    template = _JOB_TEMPLATE
    if template is None:
        return Job(**values)
    # Job(**values) without the frozen dataclass's per-field __setattr__.
    job: Job = object.__new__(Job)
    fields = job.__dict__
    fields.update(template)
    fields.update(values)
    return job


def _job_from_row(row: tuple[Any, ...]) -> Job:
    """A row of ``job_view``: the ten columns, then status, attempts, ran_at, finished_at, the
    outcome: result (decoded JSON), traceback, progress fraction and note; then priority, snoozes."""
    job = _job(row, str(row[0]), JobStatus(row[10]), row[11], row[12], row[13], row[18], row[19])
    job.__dict__.update(result=row[14], traceback=row[15], progress=row[16], progress_note=row[17])
    return job


def _claimed_job(row: tuple[Any, ...], job_id: str, attempts: int, ran_at: datetime | None) -> Job:
    """A row a claim locked (``claimed_job``): running its attempt number ``attempts`` since ``ran_at``."""
    return _job(row, job_id, JobStatus.RUNNING, attempts, ran_at, None, row[14], row[15])
