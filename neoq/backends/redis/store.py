"""Redis's ``LeaseStore``: the lease engine's five calls, one script call each.

A job waiting in queue ``q`` is a member of the sorted set ``due:q``, scored by when it is due
(microseconds); a leased job stays there, scored by its lease's expiry, so a job whose holder died
is simply due again for any process, with no leader and no rescuer. ``lease:q`` holds the same
members with the same expiry while leased (``stats`` counts the live ones as running). The job's
hash keeps its own ``run_after`` (the engine's ``due_at``), its fencing token ``t`` (the server's
clock in microseconds at each lease, always above the last: it grows with every lease, and past a
restart that lost the data, a new job that reused an id gets tokens its old holders never had),
its attempts ``a`` (counted by the lease itself), its holder ``o`` and the lease's end ``lu``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ...job import Job, JobStatus
from ..lease import Leased, LeaseEngine, LeaseToken, Lost, Settlement
from ..lease.handoff import offer
from .rows import decode_json, safe_text, to_us
from .scripts import Scripts

__all__ = ["RedisLeaseStore"]

_RUNNING = JobStatus.RUNNING
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_NEW = JobStatus.NEW
_PROCESSED = JobStatus.PROCESSED


#: The origin of the wake-ups a settle or a give-back publishes: no client's, so that every
#: listener passes them on, this client's own included (a retry or a job given back is as much for
#: this client's idle claim loops as for the others').
_EVERYONE = "*"


class RedisLeaseStore:
    """The lease engine's store calls over the backend's scripts; ``global_limit(queue)`` is the
    queue's ``Handler.global_limit`` in this process (None: none)."""

    def __init__(self, scripts: Scripts, global_limit: Callable[[str], int | None] = lambda queue: None) -> None:
        self._scripts = scripts
        self._origin = _EVERYONE
        self._global_limit = global_limit

    def close(self) -> None:
        """Nothing of its own: the backend closes the connection pool."""

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        """Lease up to ``limit`` due jobs of ``queue`` in one script call (fetch.lua)."""
        cap = self._global_limit(queue)
        reply = self._scripts.run(
            "fetch",
            [queue, owner, limit, int(lease * 1_000_000), "" if cap is None else cap],
            f"leasing jobs of queue {queue!r}",
        )
        return self.leased(queue, reply)

    def enqueue_handing(self, engine: LeaseEngine, queue: str, args: list[Any]) -> tuple[Any, bool]:
        """enqueue_one.lua (``args`` as a plain enqueue's) for a queue whose claim loops wait in
        ``engine`` (``handoff.wants``): the same call leases for them as ``fetch`` would, and what
        it leased is offered to the engine. The reply as a plain enqueue's (the id, or a
        duplicate's), and whether this job was among the jobs leased."""
        cap = self._global_limit(queue)
        lease = int(engine.lease * 1_000_000)
        extra = [engine.owner, 1, lease, "" if cap is None else cap]
        reply = self._scripts.run("enqueue_one", [*args, *extra], "enqueueing a job")
        if reply[0] == "dup":
            return reply, False
        job_id, answer = reply
        leased = self.leased(queue, answer)[0]
        if leased:
            offer(engine, queue, leased)
        return job_id, any(held[1] == str(job_id) for held in leased)

    def leased(self, queue: str, reply: list[Any]) -> tuple[list[Leased], float | None, bool]:
        """``fetch``'s answer from lease_jobs' reply (base.lua): the jobs leased, else when the next
        comes due and whether the queue is at its global limit."""
        if len(reply) == 1:
            head = reply[0]
            if head == "held":  # at its global limit: a settle of the queue wakes its loops
                return [], None, True
            return [], (None if head == "" else max(0.0, int(head) / 1_000_000)), False
        leased: list[Leased] = []
        running = _RUNNING
        for row in decode_json(reply[1]):
            job_id, token, attempts, ran_at, fp, payload, run_after, deadline, max_retries, retries, error, created = (
                row[:12]
            )
            due_at = _EPOCH + timedelta(microseconds=run_after)
            job = Job(
                queue=queue,
                payload=payload,
                run_after=due_at,
                deadline=None if deadline is None else _EPOCH + timedelta(microseconds=deadline),
                max_retries=max_retries,
                fingerprint=fp,
                id=str(job_id),
                status=running,
                retries=retries,
                attempts=attempts,
                error=error,
                created_at=_EPOCH + timedelta(microseconds=created),
                ran_at=_EPOCH + timedelta(microseconds=ran_at),
                snoozes=row[12],
                priority=row[13],
            )
            leased.append((job, job.id, token, due_at, False))
        return leased, None, False

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        """Write ``batch``'s outcomes in one script call (settle.lua), each fenced by its token."""
        outcomes: list[list[Any]] = []
        processed, new = _PROCESSED, _NEW
        for pending in batch:
            lease, outcome = pending.lease, pending.outcome
            status = outcome.status
            if status is processed:
                result = "" if outcome.result is None else outcome.result
                outcomes.append([lease.job_id, lease.queue, str(lease.token), "processed", "", "", "", result, "", ""])
                continue
            error = "" if outcome.error is None else safe_text(outcome.error)
            traceback = "" if outcome.traceback is None else safe_text(outcome.traceback)
            if status is new:
                run_after = "" if outcome.run_after is None else str(to_us(outcome.run_after))
                retries = "" if outcome.retries is None else str(outcome.retries)
                snoozed = "1" if outcome.snoozed else ""
                outcomes.append(
                    [
                        lease.job_id,
                        lease.queue,
                        str(lease.token),
                        "new",
                        error,
                        run_after,
                        retries,
                        "",
                        traceback,
                        snoozed,
                    ]
                )
            else:
                outcomes.append(
                    [lease.job_id, lease.queue, str(lease.token), status.value, error, "", "", "", traceback, ""]
                )
        written = self._scripts.run(
            "settle", [self._origin, _encode(outcomes)], f"writing the outcomes of {len(batch)} jobs"
        )
        return set(written)

    def progress(self, lease: LeaseToken, fraction: float, note: str | None) -> None:
        """A running job's progress report (progress.lua), fenced by the lease's token."""
        args = [
            lease.job_id,
            str(lease.token),
            repr(float(fraction)),
            "0" if note is None else "1",
            safe_text(note or ""),
        ]
        self._scripts.run("progress", args, "storing a progress report")

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        """Renew the leases past a third of their time in one script call (renew.lua); the lost ones."""
        micros = int(lease * 1_000_000)
        args: list[Any] = [micros, micros * 2 // 3]
        for held in leases:
            args += (held.job_id, held.queue, held.token)
        reply = self._scripts.run("renew", args, "renewing leases")
        return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    def give_back(self, leases: list[LeaseToken], *, wake: bool = True) -> None:
        """Put unstarted leased jobs back, due at each lease's ``due_at``, in one script call
        (give_back.lua); with ``wake``, every client's loops of their queues look again."""
        args: list[Any] = [self._origin if wake else ""]
        for held in leases:
            args += (held.job_id, held.queue, held.token, to_us(held.due_at))
        self._scripts.run("give_back", args, "putting unstarted leased jobs back")
