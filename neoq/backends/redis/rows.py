"""How jobs travel to and from the Redis scripts: times as integer microseconds since 1970 (UTC),
a job's fields as the flat lists the scripts take and return."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from ...errors import DuplicateJobError
from ...job import Job, JobStatus, encode_payload
from ...uniqueness import unique_seconds
from ..base import PrepareJob

__all__ = [
    "ROW_WIDTH",
    "Wakes",
    "decode_json",
    "from_us",
    "job_args",
    "job_from_row",
    "jobs_text",
    "safe_text",
    "stored_ids",
    "to_us",
    "with_text",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

#: Values per job in a row of read.lua: id, queue, fingerprint, payload, status, run_after,
#: deadline, max_retries, retries, attempts, error, created_at, ran_at, finished_at, result,
#: traceback, progress, progress note, priority, snoozes.
ROW_WIDTH = 20

_STATUSES = {status.value: status for status in JobStatus}
decode_json = json.JSONDecoder().decode


def to_us(when: datetime) -> int:
    """An aware datetime as integer microseconds since 1970."""
    return (when - _EPOCH) // _MICROSECOND


def from_us(value: Any) -> datetime | None:
    """Microseconds since 1970 (as the scripts return them) as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    return _EPOCH + timedelta(microseconds=int(value))


def safe_text(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate shown escaped (Redis strings are bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_encode_jobs = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: A str as JSON text, as _encode_jobs writes it (a prepared job's fingerprint is a str).
_encode_text: Callable[[Any], str] = json.encoder.encode_basestring

#: What a batch's enqueue wakes once stored: (queue, run_after) pairs, run_after None for now.
Wakes = list[tuple[str, datetime | None]]


def jobs_text(jobs: Sequence[object], prepare: PrepareJob) -> tuple[str, Wakes]:
    """The JSON array enqueue_jobs (common.lua) takes, of ``jobs`` each prepared by ``prepare``:
    [queues, extras, fingerprint, payload text, fingerprint, payload text, ...]: two strings a job
    after ``queues`` (the queue of all, or a list of each one's) and ``extras`` (one list [index,
    run_after, deadline, max_retries, priority, unique_for in microseconds; "" for none] a job
    with any of them or a priority but 0: most jobs have none, and no list a job is less to build
    here and to decode there). One argument for the whole batch: Lua's cjson decodes it faster
    than the server takes thousands of arguments. With it, what to wake once it is stored.

    Each job is written as text and its prepared copy dropped at once: nothing of the batch but
    strings outlives its step, so a large batch gives the garbage collector no work."""
    parts: list[str] = []
    append = parts.append
    names: list[str] = []  # each job's queue
    name = names.append
    extras: list[str] = []
    later: Wakes = []
    delayed: set[int] = set()  # the jobs with a run_after
    for index, job in enumerate(jobs):
        prepared, payload = prepare(job, index)
        name(prepared.queue)
        append(_encode_text(prepared.fingerprint))
        append(_encode_text(payload))
        run_after, deadline, max_retries, window = (
            prepared.run_after,
            prepared.deadline,
            prepared.max_retries,
            prepared.unique_for,
        )
        if run_after is None and deadline is None and max_retries is None and window is None and not prepared.priority:
            continue
        if run_after is not None:
            later.append((prepared.queue, run_after))
            delayed.add(index)
        extras.append(
            _encode_jobs(
                (
                    index,
                    "" if run_after is None else str(to_us(run_after)),
                    "" if deadline is None else str(to_us(deadline)),
                    "" if max_retries is None else str(max_retries),
                    str(prepared.priority),
                    "" if window is None else str(int(unique_seconds(prepared) * 1_000_000)),
                )
            )
        )
    one = names[0] if names else ""
    queues = _encode_text(one) if names.count(one) == len(names) else _encode_jobs(names)
    # Woken now: the queues of the jobs without a run_after (the others when due, or now if past).
    now = [queue for index, queue in enumerate(names) if index not in delayed] if delayed else names
    body = ",".join(parts)
    text = f"[{queues},[{','.join(extras)}]{',' if body else ''}{body}]"
    return text, [(queue, None) for queue in dict.fromkeys(now)] + later


def with_text(job: object, _index: int) -> tuple[Job, str]:
    """``PrepareJob`` for a job prepared already (``Backend.enqueue``): it, with its payload's JSON text."""
    prepared = cast(Job, job)
    return prepared, encode_payload(prepared.payload)


def job_args(job: Job, payload: str) -> list[Any]:
    """One job as enqueue_one.lua takes it: queue, fingerprint, payload text, run_after,
    deadline, max_retries, priority, unique_for in microseconds ("" for none)."""
    run_after, deadline, max_retries, window = job.run_after, job.deadline, job.max_retries, job.unique_for
    return [
        job.queue,
        job.fingerprint,
        payload,
        "" if run_after is None else to_us(run_after),
        "" if deadline is None else to_us(deadline),
        "" if max_retries is None else max_retries,
        job.priority,
        "" if window is None else int(unique_seconds(job) * 1_000_000),
    ]


def job_from_row(row: Sequence[Any]) -> Job:
    """A ``Job`` from one row of read.lua (``ROW_WIDTH`` values)."""
    (job_id, queue, fp, payload, status, run_after, deadline, max_retries, retries, attempts, error) = row[:11]
    result, traceback, progress, note, priority, snoozes = row[14:20]
    return Job(
        queue=queue,
        payload=decode_json(payload),
        run_after=from_us(run_after),
        deadline=from_us(deadline),
        max_retries=None if max_retries is None else int(max_retries),
        fingerprint=fp,
        id=str(job_id),
        status=_STATUSES[status],
        retries=int(retries),
        attempts=int(attempts),
        error=error or None,
        created_at=from_us(row[11]),
        ran_at=from_us(row[12]),
        finished_at=from_us(row[13]),
        result=None if result is None else decode_json(result),  # a fresh object per read
        traceback=traceback or None,
        progress=None if progress is None else float(progress),
        progress_note=note,
        priority=int(priority),
        snoozes=int(snoozes),
    )


def stored_ids(reply: Any, count: int, job_at: Callable[[int], Job]) -> list[str]:
    """The ids an enqueue script stored of ``count`` jobs (it answers the first: they are
    consecutive), or the ``DuplicateJobError`` it found: a waiting or running job's fingerprint,
    or a ``unique_for`` window (its answer then also holds the age of the earlier enqueue, in
    microseconds); ``job_at(index)`` gives the job it names, prepared."""
    if isinstance(reply, int):
        return [str(job_id) for job_id in range(reply, reply + count)]
    index = int(reply[1])
    job = job_at(index)
    existing = reply[2] or None
    if len(reply) > 3:
        raise DuplicateJobError(
            f"job {index} of queue {job.queue!r} was enqueued as job {existing} {int(reply[3]) / 1e6:.3g}s "
            f"ago, within its unique_for of {unique_seconds(job):g}s",
            existing,
        )
    raise DuplicateJobError(
        f"a job with the same fingerprint is already waiting or running in queue {job.queue!r}"
        + (f" (job {existing})" if existing else " (in the same batch)"),
        existing,
    )
