"""The SQLite backend's flow control (docs/flow-control.md): a mixin of ``SqliteBackend``.

Every write holds the file's write lock (``BEGIN IMMEDIATE``), so each feature is a plain read
and write in one transaction, race-free across processes:

- **Pausing.** A paused queue has a row in ``neoq_queue_pauses``; each fetch reads it in its write
  transaction, so once ``pause_queue`` committed no fetch of any process leases a job of the queue.
  Jobs this client leased ahead are given back at once; other clients give back theirs when their
  watcher sees the file change (within ``watch_interval``). A look at a paused queue answers
  "nothing due, none scheduled"; ``resume_queue`` wakes the loops (the watcher, elsewhere).
- **Priorities.** The fetch reads three ranges in claim order (leasestore.py).
- **Snoozes.** The settle adds one to ``snoozes`` and leaves ``retries`` alone.
- **Unique for a period.** ``open_windows`` runs in the enqueue's transaction: the last enqueue of
  each queue and fingerprint with a ``unique_for`` is a row of ``neoq_unique_windows``; an enqueue
  within the new job's window of it is refused and its whole batch rolls back.
- **Global limits.** The fetch counts the queue's live leases (every process's) and leases only
  what the limit leaves; none left: "held" (the loops look again a quarter second later). Limited
  queues lease nothing ahead.
- **Rate limits.** A look claims a job, then takes a start of its key's window
  (``neoq_rate_starts``) in a transaction of its own; with the window full the job goes back
  unstarted and uncounted, and the look answers when the window has room (with a ``key``: the job
  is put off until its key has room, and the look goes on).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, cast

from ...errors import DuplicateJobError
from ...uniqueness import unique_seconds
from ...waiting import Look
from ..capabilities import GLOBAL_LIMIT, PAUSE, PRIORITY, RATE_LIMIT, SNOOZE, UNIQUE_FOR
from ..lease import LeaseToken
from ..lease.handback import give_back_queue, take_back
from ..ratelook import rated_look
from .rows import now_micros

if TYPE_CHECKING:
    from ...flow import RateLimit
    from ...handler import Handler
    from ...job import Job
    from ..base import Claim
    from ..lease import LeaseEngine
    from .connections import Connections
    from .leasestore import SqliteLeaseStore

__all__ = ["FLOW_CAPABILITIES", "SqliteFlow", "open_windows"]

logger = logging.getLogger(__name__)

#: The flow-control capabilities of the SQLite backend.
FLOW_CAPABILITIES = frozenset({PRIORITY, PAUSE, SNOOZE, UNIQUE_FOR, GLOBAL_LIMIT, RATE_LIMIT})

_TAKE_COUNT = "SELECT count(*), min(started_at) FROM neoq_rate_starts WHERE queue = ? AND key = ? AND started_at > ?"


def open_windows(conn: sqlite3.Connection, jobs: Sequence[Job], ids: Sequence[str], now: int) -> None:
    """Record the enqueue of ``jobs`` (stored as ``ids``) that have a ``unique_for``, in the caller's
    write transaction; raise ``DuplicateJobError`` for the first within an earlier one's window."""
    for index, job in enumerate(jobs):
        if job.unique_for is None:
            continue
        window = unique_seconds(job)
        row = conn.execute(
            "SELECT enqueued_at, job_id FROM neoq_unique_windows WHERE queue = ? AND fingerprint = ?",
            (job.queue, job.fingerprint),
        ).fetchone()
        if row is not None and now - row[0] < window * 1e6:
            ago = (now - row[0]) / 1e6
            raise DuplicateJobError(
                f"job {index} of queue {job.queue!r} was enqueued as job {row[1]} {ago:.3g}s ago, "
                f"within its unique_for of {window:g}s: nothing was stored",
                str(row[1]),
            )
        conn.execute(
            "INSERT OR REPLACE INTO neoq_unique_windows (queue, fingerprint, enqueued_at, unique_for, job_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (job.queue, job.fingerprint, now, window, int(ids[index])),
        )


class SqliteFlow:
    """``pause_queue``, ``resume_queue``, ``paused_queues``, and the limits of ``prepare_queue``/``look``."""

    _conns: Connections | None
    _engine: LeaseEngine | None
    _prefetch: dict[str, int]

    if TYPE_CHECKING:

        def _require_conns(self) -> Connections: ...

        def _engine_now(self) -> LeaseEngine: ...

        def _lease_store(self) -> SqliteLeaseStore: ...

        def _stored(self, delays: dict[str, float]) -> None: ...

    def _flow_init(self) -> None:
        #: The rate limit of each queue that has one; the global limits (the lease store reads them).
        self._rates: dict[str, RateLimit] = {}
        self._global_limits: dict[str, int] = {}
        #: The queues this client saw paused (the watcher refreshes it when the file changes).
        self._paused_seen: set[str] = set()

    def _prepare_flow(self, queue: str, handler: Handler) -> None:
        if handler.rate_limit is not None:
            self._rates[queue] = handler.rate_limit
            self._prefetch[queue] = 0
        if handler.global_limit is not None:
            self._global_limits[queue] = handler.global_limit
            self._prefetch[queue] = 0  # leased ahead, jobs would hold room that running ones could use

    # -- pausing -------------------------------------------------------------------------

    def pause_queue(self, queue: str) -> None:
        self._require_conns().write(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO neoq_queue_pauses (queue, paused_at) VALUES (?, ?)", (queue, now_micros())
            ),
            f"pausing queue {queue!r}",
        )
        self._paused_seen.add(queue)
        engine = self._engine
        if engine is not None:
            give_back_queue(engine, queue)

    def resume_queue(self, queue: str) -> None:
        self._require_conns().write(
            lambda conn: conn.execute("DELETE FROM neoq_queue_pauses WHERE queue = ?", (queue,)),
            f"resuming queue {queue!r}",
        )
        self._paused_seen.discard(queue)
        self._stored({queue: 0.0})

    def paused_queues(self) -> set[str]:
        return self._require_conns().read(
            lambda conn: {row[0] for row in conn.execute("SELECT queue FROM neoq_queue_pauses")},
            "reading the paused queues",
        )

    def _check_pauses(self) -> None:
        """The file changed (the watcher): give back what was leased ahead for queues paused elsewhere."""
        engine = self._engine
        if engine is None:
            return
        paused = self.paused_queues()
        for queue in paused - self._paused_seen:
            give_back_queue(engine, queue)
        self._paused_seen = paused

    # -- rate limits ---------------------------------------------------------------------

    def _rated_look(self, queue: str) -> Look[Claim]:
        """``look`` for a rate-limited queue: a claim, then a start of its key's window."""
        rate = self._rates[queue]
        engine = self._engine_now()
        return rated_look(
            functools.partial(engine.look, queue),
            rate,
            functools.partial(self._take_start, queue, rate=rate),
            self._put_off,
        )

    def _take_start(self, queue: str, key: str, rate: RateLimit) -> float:
        """Take a start of ``(queue, key)`` if its window has room: 0; else the seconds until it has."""
        per_us = int(rate.window * 1e6)

        def take(conn: sqlite3.Connection) -> float:
            now = now_micros()
            since = now - per_us
            conn.execute(
                "DELETE FROM neoq_rate_starts WHERE queue = ? AND key = ? AND started_at <= ?", (queue, key, since)
            )
            taken, oldest = conn.execute(_TAKE_COUNT, (queue, key, since)).fetchone()
            if taken < rate.count:
                conn.execute(
                    "INSERT INTO neoq_rate_starts (queue, key, started_at) VALUES (?, ?, ?)", (queue, key, now)
                )
                return 0.0
            return max(0.001, (int(oldest) + per_us - now) / 1e6)

        return self._require_conns().write(take, f"taking a start of queue {queue!r}")

    def _put_off(self, claim: Claim, delay: float | None) -> None:
        """End ``claim`` unstarted, its attempt uncounted: its job due as before, or in ``delay`` seconds."""
        token = claim.token
        if not isinstance(token, LeaseToken):
            return
        lease = take_back(cast("LeaseEngine", token.engine), claim)
        if lease is None:
            return
        if delay is not None:
            lease.due_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        self._lease_store().give_back([lease], wake=False)
