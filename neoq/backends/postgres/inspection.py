"""Reading and managing the PostgreSQL backend's jobs: get, list, retry, cancel, stats, pruning,
cron ticks. Each is short autocommit work on an aux connection (``aux``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone

from psycopg import errors as pg_errors

from ...defaults import MIN_TICK_RETENTION
from ...errors import DuplicateJobError, JobNotFoundError
from ...job import Job, JobStatus
from .common import CHANNEL, Conn, _parse_id, _utc
from .queries import QUERIES
from .rows import _job_from_row

#: An aux connection for short work, given what it is for (``Connections.aux``).
Aux = Callable[[str], AbstractContextManager[Conn]]

_STATS_KEYS = ("new", "running", "processed", "failed", "cancelled")

#: The statuses a job keeps until ``retry_job``: what ``prune`` deletes.
_FINISHED = (JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELLED)


def cancel_job(aux: Aux, on_cancel: Callable[[str], None], job_id: str) -> None:
    """Cancel a waiting job at once; leave a durable request for a running one and tell its holder
    (``on_cancel``, when it is this process)."""
    key = _parse_id(job_id)
    if key is None:
        raise JobNotFoundError(f"no job has id {job_id!r}")
    with aux("cancelling a job") as conn:
        if conn.execute(QUERIES["cancel_waiting"], {"id": key}).fetchone() is not None:
            return
        row = conn.execute(QUERIES["job_status"], {"id": key}).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job has id {job_id!r}")
        if row[0] != JobStatus.NEW.value:
            return
        # Held by a claim (running): leave a durable request and tell its holder.
        conn.execute(QUERIES["request_cancel"], {"id": key, "channel": CHANNEL})
    on_cancel(str(key))


def last_tick(aux: Aux, key: str) -> datetime | None:
    with aux("reading the last cron tick") as conn:
        row = conn.execute(QUERIES["last_tick"], {"key": key}).fetchone()
    return None if row is None else _utc(row[0])


def prune(aux: Aux, older_than: dict[JobStatus, datetime], limit: int) -> int:
    cutoffs = {status.value: older_than.get(status) for status in _FINISHED}
    deleted = 0
    with aux("pruning jobs") as conn:
        # Small batches, each its own transaction, so no lock is held for long.
        while deleted < limit:
            batch = min(500, limit - deleted)
            row = conn.execute(QUERIES["prune"], dict(cutoffs, limit=batch)).fetchone()
            count = 0 if row is None else int(row[0])
            deleted += count
            if count < batch:
                break
        known = [cutoff for cutoff in older_than.values() if cutoff is not None]
        if known:
            floor = datetime.now(timezone.utc) - timedelta(seconds=MIN_TICK_RETENTION)
            conn.execute(QUERIES["prune_ticks"], {"cutoff": min(*known, floor)})
        if older_than.get(JobStatus.FAILED) is not None:  # unique_for is remembered as long as failed jobs
            conn.execute(QUERIES["prune_windows"], {"cutoff": older_than[JobStatus.FAILED]})
    return deleted


def get_job(aux: Aux, job_id: str, connection: Conn | None = None) -> Job | None:
    key = _parse_id(job_id)
    if key is None:
        return None
    if connection is not None:  # the caller's transaction: it sees the jobs it enqueued, not committed yet
        row = connection.execute(QUERIES["get_job"], {"id": key}).fetchone()
        return None if row is None else _job_from_row(row)
    with aux("reading a job") as conn:
        row = conn.execute(QUERIES["get_job"], {"id": key}).fetchone()
    return None if row is None else _job_from_row(row)


def list_jobs(aux: Aux, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
    params = {"queue": queue, "status": None if status is None else status.value, "limit": limit}
    with aux("listing jobs") as conn:
        rows = conn.execute(QUERIES["list_jobs"], params).fetchall()
    return [_job_from_row(row) for row in rows]


def retry_job(aux: Aux, signal: Callable[[set[str]], None], job_id: str) -> None:
    """Make a finished job due now with fresh counters; wake this process's claims of its queue."""
    key = _parse_id(job_id)
    if key is None:
        raise JobNotFoundError(f"no job has id {job_id!r}")
    with aux("retrying a job") as conn:
        try:
            row = conn.execute(QUERIES["retry_job"], {"id": key, "channel": CHANNEL}).fetchone()
        except pg_errors.UniqueViolation:
            holder = conn.execute(QUERIES["fingerprint_holder"], {"id": key}).fetchone()
            holder_id = None if holder is None else str(holder[0])
            raise DuplicateJobError(
                f"job {holder_id or '?'} with the same queue and fingerprint is still new", holder_id
            ) from None
        if row is None:
            if conn.execute(QUERIES["job_status"], {"id": key}).fetchone() is None:
                raise JobNotFoundError(f"no job has id {job_id!r}")
            return  # a NEW job is left as it is
    signal({row[0]})


def progress(aux: Aux, job_id: str, fraction: float, note: str | None) -> None:
    """A transaction-mode claim's progress report: an autocommit upsert beside the locked row."""
    with aux("storing a progress report") as conn:
        conn.execute(QUERIES["progress"], {"id": int(job_id), "fraction": fraction, "note": note})


def stats(aux: Aux) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    with aux("reading stats") as conn:
        rows = conn.execute(QUERIES["stats"]).fetchall()
    for queue, status, count in rows:
        counts = result.get(queue)
        if counts is None:
            counts = result[queue] = dict.fromkeys(_STATS_KEYS, 0)
        counts[status] = int(count)
    return result
