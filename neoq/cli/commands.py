"""The commands of ``neoq``, one function each: take the parsed arguments, print, return the exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..app import Neoq, new
from ..backends.base import Backend
from ..backends.capabilities import SHARED
from ..backends.registry import backend_from_url
from ..job import Job, JobStatus
from ..redact import redact_url, url_scheme
from .errors import EXIT_OK, CommandError
from .output import emit, format_table, job_to_dict, setup_logging, truncate, versions, when
from .runner import load_client, run_worker

__all__ = [
    "enqueue",
    "jobs_cancel",
    "jobs_list",
    "jobs_retry",
    "jobs_show",
    "migrate",
    "queues_list",
    "queues_pause",
    "queues_resume",
    "stats",
    "worker",
]


def _private_note(shown: str) -> str:
    """Why an inspecting command refuses a store without the ``"shared"`` capability."""
    return (
        f"{shown} is private to each process, so there is nothing to see from here; "
        "give --url or NEOQ_URL with the store your workers use (e.g. their PostgreSQL database)"
    )


_MEMORY_NOTE = _private_note("memory://")


def _url(args: argparse.Namespace) -> str | None:
    url: str | None = args.url or os.environ.get("NEOQ_URL") or None
    return url


@contextmanager
def _client(args: argparse.Namespace, *, shared: bool) -> Iterator[Neoq]:
    """Open a client on the URL of ``args``; ``shared`` commands refuse a store private to one process.

    ``shared`` commands (``jobs``, ``stats``) look at a store that workers use (capability
    ``"shared"``): they never create or migrate its schema (``neoq migrate`` does), and say so when
    it is missing or out of date.
    """
    url = _url(args)
    if not shared:
        nq = new(url or "memory://")
    elif url is None:
        raise CommandError(f"no backend given: {_MEMORY_NOTE}")
    else:
        backend = backend_from_url(url)
        if SHARED not in backend.capabilities:
            raise CommandError(_private_note(redact_url(url)))
        _require_schema(backend)
        nq = new(backend=backend)
    try:
        yield nq
    finally:
        nq.shutdown()


def _require_schema(backend: Backend) -> None:
    """Raise ``CommandError`` when the store of ``backend`` has no neoq schema, or an older one."""
    missing = backend.missing_migrations()
    if not missing:
        return
    if missing[0] == 1:
        raise CommandError(
            "the database has no neoq schema: create it with `neoq migrate` (same --url), then try again"
        )
    raise CommandError(
        f"the neoq schema of the database is out of date (it lacks migrations {versions(missing)}): "
        "upgrade it with `neoq migrate` (same --url), then try again"
    )


def worker(args: argparse.Namespace) -> int:
    """``neoq worker MODULE:ATTR``: run the client's handlers until a signal (``runner.run_worker``)."""
    if args.url:
        # Read by neoq.new() when the application's module creates its client without a URL.
        os.environ["NEOQ_URL"] = args.url
    nq = load_client(args.app)
    setup_logging(args.json, args.log_level)
    return run_worker(nq, args.queue, name=args.app)


def enqueue(args: argparse.Namespace) -> int:
    """``neoq enqueue QUEUE JSON``: enqueue one job and print its id."""
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise CommandError(f"the payload is not valid JSON ({exc}); give an object like '{{\"to\": 7}}'") from None
    if not isinstance(payload, dict):
        raise CommandError(f"the payload must be a JSON object like '{{\"to\": 7}}', not a JSON {_json_kind(payload)}")
    job = Job(
        queue=args.queue,
        payload=payload,
        run_after=args.run_after,
        deadline=args.deadline,
        max_retries=args.max_retries,
        priority=args.priority,
    )
    with _client(args, shared=False) as nq:
        if SHARED not in nq.backend.capabilities:
            url = _url(args)
            why = "no --url or NEOQ_URL: " if url is None else ""
            print(
                f"neoq: warning: {why}the job went to a private {redact_url(url or 'memory://')} store "
                "and is gone when this command exits",
                file=sys.stderr,
            )
        job_id = nq.enqueue(job)
    emit(args, {"id": job_id, "queue": job.queue}, job_id)
    return EXIT_OK


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def migrate(args: argparse.Namespace) -> int:
    """``neoq migrate``: create or upgrade the schema and say what was applied."""
    url = _url(args) or "memory://"
    shown = redact_url(url)
    # Backend.migrate() works on a backend that is not open, and leaves nothing open.
    applied = backend_from_url(url).migrate()
    if applied is None:
        text = f"{shown}: {url_scheme(url)}:// keeps no schema; nothing to migrate"
        emit(args, {"url": shown, "migrated": False}, text)
        return EXIT_OK
    if applied:
        many = "s" if len(applied) > 1 else ""
        text = f"{shown}: applied migration{many} {versions(applied)}; the schema is up to date"
    else:
        text = f"{shown}: the schema was already up to date; nothing applied"
    emit(args, {"url": shown, "migrated": True, "applied": applied}, text)
    return EXIT_OK


def jobs_list(args: argparse.Namespace) -> int:
    """``neoq jobs list``: a table of jobs, newest first."""
    with _client(args, shared=True) as nq:
        jobs = nq.list_jobs(queue=args.queue, status=args.status, limit=args.limit)
    rows = [
        [
            job.id or "",
            job.queue,
            job.status.value,
            str(job.priority),
            str(job.attempts),
            when(job.created_at),
            when(job.run_after),
            truncate(job.error or "", 60),
        ]
        for job in jobs
    ]
    headers = ["ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED", "RUN AFTER", "ERROR"]
    emit(args, [job_to_dict(job) for job in jobs], format_table(headers, rows) if rows else "no jobs")
    return EXIT_OK


#: The fields ``jobs show`` prints as blocks after the table (JSON, or many lines), when set.
_BLOCKS = ("payload", "result", "traceback")


def jobs_show(args: argparse.Namespace) -> int:
    """``neoq jobs show ID``: every field of one job, then its payload, result and traceback."""
    with _client(args, shared=True) as nq:
        job = nq.get_job(args.job_id)
    if job is None:
        raise CommandError(f"no job has id {args.job_id!r}")
    data = job_to_dict(job)
    lines = [[key, "-" if value is None else str(value)] for key, value in data.items() if key not in _BLOCKS]
    text = format_table(None, lines) + "\npayload\n" + json.dumps(job.payload, indent=2, ensure_ascii=False)
    if job.result is not None:
        text += "\nresult\n" + json.dumps(job.result, indent=2, ensure_ascii=False)
    if job.traceback is not None:
        text += "\ntraceback\n" + job.traceback.rstrip("\n")
    emit(args, data, text)
    return EXIT_OK


#: The statuses of a job that has not finished, and how the CLI says them.
_WAITING_OR_RUNNING = {JobStatus.NEW: "waiting", JobStatus.RUNNING: "running"}
_NOT_FINISHED = frozenset(_WAITING_OR_RUNNING)


def jobs_retry(args: argparse.Namespace) -> int:
    """``neoq jobs retry ID``: run a finished job again."""
    with _client(args, shared=True) as nq:
        before = nq.get_job(args.job_id)
        nq.retry_job(args.job_id)
        job = nq.get_job(args.job_id)
    status = job.status.value if job is not None else JobStatus.NEW.value
    if before is not None and before.status in _NOT_FINISHED:
        text = f"job {args.job_id} is already {_WAITING_OR_RUNNING[before.status]}; nothing changed"
    else:
        text = f"job {args.job_id} will run again"
    emit(args, {"id": args.job_id, "status": status}, text)
    return EXIT_OK


def jobs_cancel(args: argparse.Namespace) -> int:
    """``neoq jobs cancel ID``: cancel a waiting or running job."""
    with _client(args, shared=True) as nq:
        before = nq.get_job(args.job_id)
        nq.cancel_job(args.job_id)
        job = nq.get_job(args.job_id)
    status = job.status if job is not None else JobStatus.CANCELLED
    if before is not None and before.status not in _NOT_FINISHED:
        text = f"job {args.job_id} had already finished ({before.status.value}); nothing changed"
    elif status is JobStatus.CANCELLED:
        text = f"job {args.job_id} cancelled"
    else:
        text = f"job {args.job_id} is running: its worker was asked to stop it, and it will end cancelled"
    emit(args, {"id": args.job_id, "status": status.value}, text)
    return EXIT_OK


def queues_list(args: argparse.Namespace) -> int:
    """``neoq queues list``: each queue with jobs or paused, whether it is paused, its waiting and running jobs."""
    with _client(args, shared=True) as nq:
        counts = dict(sorted(nq.stats().items()))
    rows = [
        [queue, "paused" if c.get("paused") else "active", str(c.get("new", 0)), str(c.get("running", 0))]
        for queue, c in counts.items()
    ]
    data = [{"queue": row[0], "paused": row[1] == "paused", "new": int(row[2]), "running": int(row[3])} for row in rows]
    table = format_table(["QUEUE", "STATE", "NEW", "RUNNING"], rows, right=(2, 3)) if rows else "no queues"
    emit(args, data, table)
    return EXIT_OK


def queues_pause(args: argparse.Namespace) -> int:
    """``neoq queues pause Q``: no process starts a job of Q until it is resumed."""
    with _client(args, shared=True) as nq:
        nq.pause_queue(args.queue)
    emit(args, {"queue": args.queue, "paused": True}, f"queue {args.queue!r} paused: running jobs finish, none starts")
    return EXIT_OK


def queues_resume(args: argparse.Namespace) -> int:
    """``neoq queues resume Q``: Q's jobs start again."""
    with _client(args, shared=True) as nq:
        nq.resume_queue(args.queue)
    emit(args, {"queue": args.queue, "paused": False}, f"queue {args.queue!r} resumed")
    return EXIT_OK


def stats(args: argparse.Namespace) -> int:
    """``neoq stats``: a table of job counts per queue and status."""
    with _client(args, shared=True) as nq:
        counts_by_queue = dict(sorted(nq.stats().items()))
    columns = [status.value for status in JobStatus]
    rows = [
        [queue + (" (paused)" if counts.get("paused") else "")] + [str(counts.get(column, 0)) for column in columns]
        for queue, counts in counts_by_queue.items()
    ]
    if len(rows) > 1:
        rows.append(["(all)"] + [str(sum(c.get(column, 0) for c in counts_by_queue.values())) for column in columns])
    headers = ["QUEUE"] + [column.upper() for column in columns]
    table = format_table(headers, rows, right=range(1, len(headers))) if rows else "no jobs"
    emit(args, counts_by_queue, table)
    return EXIT_OK
