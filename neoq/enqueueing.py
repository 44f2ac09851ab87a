"""Enqueueing for the client: each job checked and encoded once, stored by the backend, told to the hooks.

``Neoq.enqueue`` and ``Neoq.enqueue_many`` check that the client is open and hand the rest to an
``Enqueuer``. It also owns the one warning about the implicit ``memory://`` store: jobs enqueued
into it reach no other process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .backends.base import Backend
from .backends.capabilities import PRIORITY, UNIQUE_FOR
from .errors import InvalidJobError
from .hooks import Hooks
from .job import Job, prepare_job

__all__ = ["Enqueuer", "prepare_at"]


def prepare_at(job: object, index: int) -> tuple[Job, str]:
    """``prepare_job`` for the ``index``-th job of an ``enqueue_many`` batch; errors name the index."""
    try:
        return prepare_job(job)
    except InvalidJobError as exc:
        raise InvalidJobError(f"job {index}: {exc}") from None


class Enqueuer:
    """Stores jobs through ``backend`` and tells ``hooks``; ``runs(queue)`` says whether this client runs a queue."""

    def __init__(self, backend: Backend, hooks: Hooks, log: logging.Logger, runs: Callable[[str], bool]) -> None:
        self._backend = backend
        self._hooks = hooks
        self._log = log
        self._runs = runs
        #: Whether ``backend.enqueue_prepared`` is the default (prepare each job, then ``enqueue``):
        #: a single enqueue then calls ``enqueue`` itself, without the callback and the list.
        self._plain = type(backend).enqueue_prepared is Backend.enqueue_prepared and "enqueue_prepared" not in getattr(
            backend, "__dict__", ()
        )
        #: What the store cannot honour of a job's flow-control fields: each is refused before
        #: anything is stored (``_refuse``). Empty for memory and PostgreSQL: no check at all.
        self._unsupported = frozenset({PRIORITY, UNIQUE_FOR}) - backend.capabilities
        #: Set by ``neoq.new()`` when nothing named the store: the first enqueue into a queue this
        #: client does not run warns, once, that no other process can run it.
        self.warn_private = False

    def enqueue(self, job: Job, connection: Any) -> str:
        """Store one job (``Neoq.enqueue``) and return its id."""
        prepared, text = prepare_job(job)
        if self._unsupported:
            self._refuse(prepared, None)
        if self.warn_private:
            self._warn_private((prepared.queue,))
        if self._plain:  # what the default enqueue_prepared does, for one job
            job_id = self._backend.enqueue([prepared], connection=connection)[0]
        else:
            # Through enqueue_prepared, so the backend can store the JSON text prepare_job made.
            job_id = self._backend.enqueue_prepared(
                (prepared,), lambda _job, _index: (prepared, text), connection=connection
            )[0]
        if self._hooks.active:
            self._hooks.enqueued([replace(prepared, id=job_id)])
        return job_id

    def enqueue_many(self, jobs: Iterable[Job], connection: Any) -> list[str]:
        """Store a batch atomically (``Neoq.enqueue_many``) and return the ids."""
        if isinstance(jobs, (Job, str, bytes)) or not isinstance(jobs, Iterable):
            raise InvalidJobError("enqueue_many takes an iterable of neoq.Job")
        batch = jobs if isinstance(jobs, (list, tuple)) else list(jobs)
        if not batch:
            return []
        if self.warn_private:
            self._warn_private(job.queue for job in batch if isinstance(job, Job) and isinstance(job.queue, str))
        # The backend prepares each job (possibly while it stores the ones before it). The
        # prepared jobs are kept only for hooks: a large batch of them kept alive costs the
        # garbage collector more than they cost to make.
        check = prepare_at if not self._unsupported else self._prepare_supported
        if not self._hooks:
            return self._backend.enqueue_prepared(batch, check, connection=connection)
        prepared: list[Job] = []

        def prepare(job: object, index: int) -> tuple[Job, str]:
            pair = check(job, index)
            prepared.append(pair[0])
            return pair

        ids = self._backend.enqueue_prepared(batch, prepare, connection=connection)
        self._hooks.enqueued([replace(job, id=job_id) for job, job_id in zip(prepared, ids, strict=True)])
        return ids

    def _prepare_supported(self, job: object, index: int) -> tuple[Job, str]:
        pair = prepare_at(job, index)
        self._refuse(pair[0], index)
        return pair

    def _refuse(self, job: Job, index: int | None) -> None:
        """Raise ``InvalidJobError`` when ``job`` uses a flow-control field the store lacks the capability for."""
        if job.priority == 0 and job.unique_for is None:
            return  # the common job uses neither
        where = "" if index is None else f"job {index}: "
        for capability, used, default in (
            (PRIORITY, job.priority != 0, "priority=0"),
            (UNIQUE_FOR, job.unique_for is not None, "unique_for=None"),
        ):
            if used and capability in self._unsupported:
                raise InvalidJobError(
                    f"{where}{capability}= needs a backend with the {capability!r} capability; "
                    f"{type(self._backend).__name__} does not offer it (give {default})"
                )

    def _warn_private(self, queues: Iterable[str]) -> None:
        """Warn, once, that jobs go where only this process can run them: what a web process
        that enqueues for a worker elsewhere does when NEOQ_URL was forgotten. Quiet while this
        client runs the queues itself (``start()``)."""
        if all(self._runs(queue) for queue in queues):
            return
        self.warn_private = False
        self._log.warning(
            "neoq: jobs are enqueued into a private in-memory store (no URL given, NEOQ_URL unset): "
            "no other process can run them, and they are lost when this process exits; set NEOQ_URL "
            "(or pass a URL) to share a store with your workers, or pass memory:// explicitly if this "
            "process runs its jobs itself"
        )
