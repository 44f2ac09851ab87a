"""SQLite's ``LeaseStore``: the lease engine's five calls (``neoq.backends.lease``) on the client's pool.

A leased job stays ``'new'``: its ``run_after`` is the lease's expiry, ``lease_owner`` the holder,
``lease_token`` the fencing token (bumped by every lease, never reset). So nobody else takes a job
whose lease is alive, and a dead holder's job is due again once its lease runs out, for any
process. Each call that writes is one short ``BEGIN IMMEDIATE`` transaction:

- ``fetch`` first reads (no lock, one statement) whether anything is due; only then does it take
  the write lock, pick up to ``limit`` jobs in claim order (one statement), lease them and count
  their attempts (one more). An idle queue's look costs one index read; a fetch right after one
  that got all it asked for skips that read. The jobs are built after the commit.
- ``settle_many`` writes a whole batch of outcomes in one transaction (one statement for each 99),
  each fenced by its token. It learns that every outcome was written from the count of rows
  changed; only when a lease was lost meanwhile does it write again, with the ids returned.
- ``renew`` reads which leases need renewing or were lost; it writes only for the ones to renew.
- ``give_back`` puts unstarted jobs back as they were, their attempt uncounted.

``due(queue, delay)`` is the backend's: it tells this process's waiting loops that a job of
``queue`` comes due (a retry, a job given back); other processes hear of it from their watcher.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from ...job import JobStatus
from ..lease import Leased, LeaseToken, Lost, Settlement
from .connections import Connections
from .rows import COLUMNS, NCOLUMNS, job_from_row, micros, now_micros, values, when

__all__ = ["SqliteLeaseStore"]

#: Whether the queue is paused, and when its next job comes due (a lease's expiry included).
_LOOK = (
    "SELECT EXISTS (SELECT 1 FROM neoq_queue_pauses WHERE queue = :queue),"
    " (SELECT min(run_after) FROM neoq_jobs WHERE queue = :queue AND status = 'new')"
)

#: The claim order, (priority descending, run_after, id), as three ranges, each read from its index
#: in that order (the partial priority index above and below 0, neoq_jobs_due for 0), merged in one
#: statement that takes nothing from a paused queue. ``priority <> 0`` repeats that index's WHERE
#: word for word: SQLite uses a partial index only for a query whose WHERE contains the index's
#: terms (``priority > 0`` alone does not count), and without it each fetch read every due job of
#: the queue through neoq_jobs_due (O(queue length) a fetch).
_PICK = (
    "SELECT id, run_after FROM ("
    "SELECT * FROM (SELECT id, priority, run_after FROM neoq_jobs WHERE queue = :queue AND status = 'new'"
    " AND priority <> 0 AND priority > 0 AND run_after <= :now ORDER BY priority DESC, run_after, id LIMIT :room)"
    " UNION ALL "
    "SELECT * FROM (SELECT id, priority, run_after FROM neoq_jobs WHERE queue = :queue AND status = 'new'"
    " AND priority = 0 AND run_after <= :now ORDER BY run_after, id LIMIT :room)"
    " UNION ALL "
    "SELECT * FROM (SELECT id, priority, run_after FROM neoq_jobs WHERE queue = :queue AND status = 'new'"
    " AND priority <> 0 AND priority < 0 AND run_after <= :now ORDER BY priority DESC, run_after, id LIMIT :room)"
    ") WHERE NOT EXISTS (SELECT 1 FROM neoq_queue_pauses WHERE queue = :queue)"
    " ORDER BY priority DESC, run_after, id LIMIT :room"
)

#: The live leases of a queue (its running jobs, in every process): what a global limit counts.
_LEASED = (
    "SELECT count(*) FROM neoq_jobs WHERE queue = ? AND status = 'new' AND run_after > ? AND lease_owner IS NOT NULL"
)

#: The outcomes of up to ``_SETTLE_ROWS`` jobs in one statement, each row fenced by its token. No
#: traceback with the job's error unchanged (a cancellation, a put-back) keeps the stored one. One
#: statement for many rows costs about half as much as a statement per row.
_SETTLE = (
    "WITH v (id, token, status, error, traceback, result, run_after, retries, finished_at, snoozed) AS"
    " (VALUES {rows})"
    " UPDATE neoq_jobs SET status = v.status, error = v.error,"
    " traceback = CASE WHEN v.traceback IS NULL AND neoq_jobs.error IS v.error THEN neoq_jobs.traceback"
    " ELSE v.traceback END,"
    " result = v.result, run_after = v.run_after, retries = coalesce(v.retries, neoq_jobs.retries),"
    " finished_at = v.finished_at, snoozes = neoq_jobs.snoozes + v.snoozed, lease_owner = NULL"
    " FROM v WHERE neoq_jobs.id = v.id AND neoq_jobs.lease_token = v.token AND neoq_jobs.status = 'new'"
)
#: The same, naming the rows written: one step of the statement per row, and the write lock is held
#: while Python takes the GIL back after each (a lost lease only, see ``settle_many``).
_RETURNING = " RETURNING neoq_jobs.id"
#: Rows of one settling statement: 10 parameters each, under SQLite's oldest limit of 999.
_SETTLE_ROWS = 99

_PROGRESS = "UPDATE neoq_jobs SET progress = ?, progress_note = ? WHERE id = ? AND lease_token = ? AND status = 'new'"

#: lease_owner: a lease given back, or a retry written, since the list was read keeps its token but
#: is no one's (renewing it would put the job off by a whole lease).
_RENEW = (
    "UPDATE neoq_jobs SET run_after = ? WHERE id = ? AND lease_token = ? AND status = 'new' AND lease_owner IS NOT NULL"
)

_GIVE_BACK = (
    "UPDATE neoq_jobs SET run_after = ?, lease_owner = NULL, attempts = max(attempts - 1, 0)"
    " WHERE id = ? AND lease_token = ? AND status = 'new' RETURNING queue"
)


class _LeaseLost(Exception):
    """A settling transaction changed fewer rows than it had outcomes: some lease was lost meanwhile."""


class SqliteLeaseStore:
    """The lease engine's store calls over ``conns`` (the backend's pool)."""

    def __init__(self, conns: Connections, due: Callable[[str, float], None]) -> None:
        self._conns = conns
        self._due = due
        #: The global limit (``Handler.global_limit``) of each queue that has one (the backend's).
        self.global_limits: dict[str, int] = {}
        #: The queues whose last fetch leased as many jobs as it asked for: their next fetch skips
        #: the look without the lock (it would find jobs due), saving a call into SQLite.
        self._full: set[str] = set()

    def close(self) -> None:
        """Nothing of its own: the pool is the backend's, closed with it."""

    def fetch(self, queue: str, limit: int, lease: float, owner: str) -> tuple[list[Leased], float | None, bool]:
        """Lease up to ``limit`` due jobs of ``queue`` in claim order; else when the next comes due.

        A paused queue has nothing due and nothing scheduled (its loops wait for the resume's wake-up).
        A queue with a global limit leases only what its live leases leave room for; none left: ``held``.
        """
        now = now_micros()
        if queue not in self._full:
            # Nothing due is the common answer of an idle queue's look: found without the write lock.
            paused, nxt = self._conns.read(
                lambda conn: conn.execute(_LOOK, {"queue": queue}).fetchone(), "looking for due jobs", single=True
            )
            if paused or nxt is None:
                return [], None, False
            if nxt > now:
                return [], (nxt - now) / 1e6, False
        lease_us = int(lease * 1e6)
        global_limit = self.global_limits.get(queue)

        def take(conn: sqlite3.Connection) -> tuple[list[Any], dict[int, int], float | None, bool]:
            now = now_micros()
            room = limit
            if global_limit is not None:
                if conn.execute(_LOOK, {"queue": queue}).fetchone()[0]:
                    return [], {}, None, False  # paused
                room = min(room, global_limit - conn.execute(_LEASED, (queue, now)).fetchone()[0])
                if room <= 0:
                    return [], {}, None, True  # others run the most the limit allows: look again soon
            picked: list[tuple[int, int]] = conn.execute(_PICK, {"queue": queue, "now": now, "room": room}).fetchall()
            if not picked:
                paused, nxt = conn.execute(_LOOK, {"queue": queue}).fetchone()
                if paused or nxt is None:
                    return [], {}, None, False
                return [], {}, max(0.0, (nxt - now) / 1e6), False
            due_at = dict(picked)
            ranks = [value for index, row in enumerate(picked) for value in (row[0], index)]
            marks = ",".join("?" * len(picked))
            # ran_at a microsecond apart in claim order: the jobs of one fetch read as claimed in turn.
            places = " ".join(["WHEN ? THEN ?"] * len(picked))
            rows = conn.execute(
                f"UPDATE neoq_jobs SET run_after = ?, lease_token = lease_token + 1, lease_owner = ?,"
                f" attempts = attempts + 1, ran_at = ? + CASE id {places} END"
                f" WHERE id IN ({marks}) RETURNING {COLUMNS}, lease_token",
                (now + lease_us, owner, now, *ranks, *due_at),
            ).fetchall()
            return rows, due_at, None, False

        # The jobs are made after the commit: the file's write lock is held for the statements only.
        doing = f"leasing jobs of queue {queue!r}"
        rows, due_at, due_in, held = self._conns.write(take, doing, checkpoint=False, rows=limit)
        if len(rows) < limit:
            self._full.discard(queue)
        else:  # more are likely due: the next fetch goes straight to the write lock
            self._full.add(queue)
        if not rows:
            return [], due_in, held
        order = {key: index for index, key in enumerate(due_at)}
        rows.sort(key=lambda row: order[row[0]])
        leased: list[Leased] = []
        for row in rows:
            # The job as claimed reads due when it was, not at its lease's expiry.
            due = when(due_at[row[0]])
            assert due is not None
            leased.append((job_from_row(row, "running", run_after=due), row[0], row[NCOLUMNS], due, False))
        return leased, None, False

    def settle_many(self, batch: list[Settlement]) -> set[Any]:
        """Write ``batch``'s outcomes in one transaction, each fenced by its token; return the keys written."""
        retried: dict[str, float] = {}

        now = now_micros()
        rows: list[tuple[Any, ...]] = []
        for pending in batch:
            lease, outcome = pending.lease, pending.outcome
            status = outcome.status
            retry = status is JobStatus.NEW
            run_after = outcome.run_after if retry and outcome.run_after is not None else lease.due_at
            processed = status is JobStatus.PROCESSED
            rows.append(
                (
                    lease.job_id,
                    lease.token,
                    status.value,
                    None if processed else outcome.error,
                    None if processed else outcome.traceback,
                    outcome.result if processed else None,
                    micros(run_after),
                    outcome.retries if retry else None,
                    None if retry else now,
                    1 if retry and outcome.snoozed else 0,
                )
            )

        # The statements are made before the write lock is taken.
        chunks = []
        for start in range(0, len(rows), _SETTLE_ROWS):
            rows_sql, params = values(rows[start : start + _SETTLE_ROWS])
            chunks.append((_SETTLE.format(rows=rows_sql), params))

        def write(conn: sqlite3.Connection) -> set[Any]:
            before = conn.total_changes
            for sql, params in chunks:
                conn.execute(sql, params)
            if conn.total_changes - before != len(rows):
                raise _LeaseLost  # rolled back: written again below, naming the rows it writes
            return {row[0] for row in rows}

        def write_naming(conn: sqlite3.Connection) -> set[Any]:
            written: set[Any] = set()
            for sql, params in chunks:
                written.update(row[0] for row in conn.execute(sql + _RETURNING, params))
            return written

        doing = f"writing the outcomes of {len(batch)} jobs"
        try:
            written = self._conns.write(write, doing, rows=len(rows))
        except _LeaseLost:
            written = self._conns.write(write_naming, doing, rows=len(rows))
        for pending, row in zip(batch, rows, strict=True):
            if row[8] is None and row[0] in written:  # a retry written: due at run_after
                queue = pending.lease.queue
                delay = max(0.0, (row[6] - now) / 1e6)
                retried[queue] = min(delay, retried.get(queue, delay))
        for queue, delay in retried.items():
            self._due(queue, delay)
        limited = self.global_limits
        if limited:  # a written outcome frees room under a global limit: this client's loops look
            for queue in {pending.lease.queue for pending in batch} & limited.keys():
                if queue not in retried:
                    self._due(queue, 0.0)
        return written

    def progress(self, lease: LeaseToken, fraction: float, note: str | None) -> None:
        """A running job's progress report, fenced by the lease's token (a lost lease writes nothing)."""
        self._conns.write(
            lambda conn: conn.execute(_PROGRESS, (fraction, note, lease.job_id, lease.token)),
            "storing a progress report",
        )

    def renew(self, leases: list[LeaseToken], lease: float) -> list[Lost]:
        """Renew the leases past a third of their time; return the lost ones with their job's status."""
        ids = [held.job_id for held in leases]
        lease_us = int(lease * 1e6)
        renew_below = int(lease_us * 2 / 3)

        def look(conn: sqlite3.Connection) -> dict[Any, tuple[str, int, int]]:
            found: dict[Any, tuple[str, int, int]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT id, status, lease_token, run_after FROM neoq_jobs WHERE id IN ({marks})", chunk
                ):
                    found[row[0]] = (row[1], row[2], row[3])
            return found

        found = self._conns.read(look, "reading leases")
        now = now_micros()
        lost: list[Lost] = []
        due: list[LeaseToken] = []
        for held in leases:
            row = found.get(held.job_id)
            if row is None:
                lost.append((held.job_id, None))
            elif row[1] != held.token or row[0] != "new":
                lost.append((held.job_id, row[0]))
            elif row[2] < now + renew_below:
                due.append(held)
        if due:

            def extend(conn: sqlite3.Connection) -> list[Any]:
                until = now_micros() + lease_us
                missed = []
                for held in due:
                    if not conn.execute(_RENEW, (until, held.job_id, held.token)).rowcount:
                        missed.append(held.job_id)
                return missed

            # A lease settled or taken since the read is not renewed; the next beat reports it if lost.
            self._conns.write(extend, "renewing leases")
        return lost

    def give_back(self, leases: list[LeaseToken], *, wake: bool = True) -> None:
        """Put unstarted leased jobs back as they were (due at ``due_at``, attempt uncounted); with
        ``wake``, this client's loops of their queues look again."""

        def back(conn: sqlite3.Connection) -> set[str]:
            queues: set[str] = set()
            for held in leases:
                row = conn.execute(_GIVE_BACK, (micros(held.due_at), held.job_id, held.token)).fetchone()
                if row is not None:
                    queues.add(row[0])
            return queues

        queues = self._conns.write(back, "putting unstarted leased jobs back")
        if wake:
            for queue in queues:
                self._due(queue, 0.0)
