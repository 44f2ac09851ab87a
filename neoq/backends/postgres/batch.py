"""What an enqueue sends for a batch: the ``enqueue`` statement's parameters, COPY's rows in text format."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ...errors import DuplicateJobError, NeoqError
from ...job import Job
from .common import CHANNEL
from .notices import _QueueState


def _batch_params(jobs: Sequence[Job], payloads: list[str]) -> dict[str, Any]:
    """The parameters of the ``enqueue`` statement for ``jobs``."""
    return {
        "queues": [job.queue for job in jobs],
        "fingerprints": [job.fingerprint or "" for job in jobs],
        "payloads": payloads,
        "run_afters": [job.run_after for job in jobs],
        "deadlines": [job.deadline for job in jobs],
        "max_retries": [job.max_retries for job in jobs],
        "priorities": [job.priority for job in jobs],
        "channel": CHANNEL,
    }


#: Batches at least this large are written with COPY (see _enqueue_copy); smaller ones with one INSERT.
_COPY_MIN = 64

#: Rows of a COPY sent at a time, so that the server stores a batch while the client builds the rest.
_COPY_CHUNK = 500

#: COPY's text format: backslash, tab, newline and carriage return are escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_json(text: str) -> str:
    # JSON text never holds a raw tab, newline or carriage return (the encoder escapes them).
    return text.replace("\\", "\\\\") if "\\" in text else text


#: A COPY row: the job's index in the batch, the prepared job, its payload's JSON text.
_CopyRow = tuple[int, Job, str]


#: COPY's NULL.
_NULL = "\\N"


def _in_batch(first: int, index: int, job: Job) -> DuplicateJobError:
    return DuplicateJobError(f"jobs {first} and {index} of the batch have the same queue {job.queue!r} and fingerprint")


def _check_batch(jobs: Sequence[Job]) -> None:
    """Raise ``DuplicateJobError`` for the first job with the queue and fingerprint of an earlier one."""
    seen: dict[tuple[str, str], int] = {}
    for index, job in enumerate(jobs):
        first = seen.setdefault((job.queue, job.fingerprint or ""), index)
        if first != index:
            raise _in_batch(first, index, job)


def _duplicate_params(keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The parameters ``PostgresBackend._duplicate`` needs for jobs of these (queue, fingerprint), in order."""
    pairs = list(keys)
    return {"queues": [queue for queue, _ in pairs], "fingerprints": [fp for _, fp in pairs]}


def _copy_groups(jobs: Sequence[Job], payloads: list[str]) -> list[tuple[bool, Iterable[_CopyRow]]]:
    """The rows of prepared ``jobs`` for ``_enqueue_copy``: those without ``run_after``, then the others."""
    timed = [index for index, job in enumerate(jobs) if job.run_after is not None]
    untimed = [index for index, job in enumerate(jobs) if job.run_after is None] if timed else range(len(jobs))
    return [
        (with_run_after, [(index, jobs[index], payloads[index]) for index in indexes])
        for indexes, with_run_after in ((untimed, False), (timed, True))
        if indexes
    ]


def _copy_time(value: datetime | None) -> str:
    return "\\N" if value is None else value.isoformat()


class _Stream:
    """A large batch prepared job by job while COPY sends it (``PostgresBackend.enqueue_prepared``)."""

    __slots__ = ("error", "keys", "local", "queues")

    def __init__(self) -> None:
        #: (queue, fingerprint) of the jobs prepared so far -> the index of the first with them.
        #: The jobs themselves are not kept: a large batch of them alive costs the garbage
        #: collector more than they cost to make.
        self.keys: dict[tuple[str, str], int] = {}
        #: The batch's queues, known once every job is prepared.
        self.queues: set[str] = set()
        #: What ``LocalNotices.enqueued`` counted, for ``LocalNotices.undo`` (notices.py).
        self.local: list[_QueueState] = []
        #: The error the batch raised itself (invalid job, duplicate within the batch), if any.
        self.error: NeoqError | None = None
