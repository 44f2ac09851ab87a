"""Storing, inspecting and managing jobs in the SQLite file: each call one short transaction.

Uniqueness is the partial unique index over ``(queue, fingerprint)`` of ``'new'`` jobs (waiting or
leased): the file decides, never a check two processes could both pass. An insert it refuses
rolls the whole batch back and becomes ``DuplicateJobError`` with the holder's id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime

from ...defaults import MIN_TICK_RETENTION
from ...errors import DuplicateJobError, JobNotFoundError
from ...job import Job, JobStatus, encode_payload
from .connections import Connections
from .flow import open_windows
from .rows import COLUMNS, NCOLUMNS, STATE, job_from_row, micros, now_micros, values, when

__all__ = ["Store"]

_INSERT_INTO = (
    "INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, deadline, max_retries, created_at, priority)"
    " VALUES "
)
_INSERT = _INSERT_INTO + "(?, ?, ?, ?, ?, ?, ?, ?)"

#: A batch is stored by multi-row INSERTs of up to ``_INSERT_ROWS`` rows (8 parameters each, under
#: SQLite's oldest limit of 999): half the instructions of ``executemany``'s statement per row.
_INSERT_ROWS = 100

#: The waiting or running job with a fingerprint, stored before the batch being refused (id below ``?``).
_HOLDER = "SELECT id FROM neoq_jobs WHERE queue = ? AND fingerprint = ? AND status = 'new' AND id < ?"
_NO_ID = 2**63 - 1

_STATES = ("new", "running", "processed", "failed", "cancelled")


def _job_id(job_id: str) -> int | None:
    """The row id of ``job_id``, or None for a string this store never made."""
    if not isinstance(job_id, str) or not job_id.isascii() or not job_id.isdigit() or len(job_id) > 18:
        return None
    return int(job_id)


def _twins(jobs: Sequence[Job]) -> DuplicateJobError | None:
    """The error for a batch holding two jobs of the same queue and fingerprint, if it does (the
    unique index refused the batch: this is looked for only then)."""
    seen: set[tuple[str, str | None]] = set()
    for job in jobs:
        key = (job.queue, job.fingerprint)
        if key in seen:
            return DuplicateJobError(
                f"two jobs of the batch have the same queue {key[0]!r} and fingerprint: nothing was stored"
            )
        seen.add(key)
    return None


class Store:
    """The backend's non-claim calls over its pool. ``woken(queues_with_delays)`` tells this process's
    waiting loops about jobs stored (``{queue: seconds until the earliest comes due}``)."""

    def __init__(self, conns: Connections, woken: Callable[[dict[str, float]], None]) -> None:
        self._conns = conns
        self._woken = woken

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job], texts: Sequence[str] | None = None) -> list[str]:
        """Store ``jobs`` (with their payloads' JSON ``texts`` when known) in one transaction."""
        if not jobs:
            return []
        if texts is None:
            texts = [encode_payload(job.payload) for job in jobs]
        # The parameters are made before the write lock is taken: the file is locked for the inserts only.
        now = now_micros()
        windowed = any(job.unique_for is not None for job in jobs)
        rows = []
        delays: dict[str, float] = {}
        for job, text in zip(jobs, texts, strict=True):
            run_after = now if job.run_after is None else micros(job.run_after)
            deadline = None if job.deadline is None else micros(job.deadline)
            rows.append((job.queue, job.fingerprint, text, run_after, deadline, job.max_retries, now, job.priority))
            if run_after > now:
                delay = (run_after - now) / 1e6
                delays[job.queue] = min(delay, delays.get(job.queue, delay))
            else:
                delays[job.queue] = 0.0
        # One job is inserted as it is (``values`` costs more than it saves for one row).
        chunks = []
        for start in range(0, len(rows) if len(rows) > 1 else 0, _INSERT_ROWS):
            chunk = rows[start : start + _INSERT_ROWS]
            rows_sql, params = values(chunk)
            chunks.append((_INSERT_INTO + rows_sql, params, len(chunk)))

        def insert(conn: sqlite3.Connection) -> list[str]:
            start = 0
            first = _NO_ID  # the batch's first id, once a chunk is in
            try:
                if len(rows) == 1:
                    ids = [str(conn.execute(_INSERT, rows[0]).lastrowid)]
                else:
                    for index, (sql, params, count) in enumerate(chunks):
                        start = index * _INSERT_ROWS
                        last = conn.execute(sql, params).lastrowid
                        if first == _NO_ID and last:
                            first = last - count + 1
                    # The write lock is held and ids are AUTOINCREMENT, given row after row in the
                    # order of the VALUES: the batch took the last ids, in its order.
                    last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'neoq_jobs'").fetchone()[0]
                    ids = [str(job_id) for job_id in range(last - len(rows) + 1, last + 1)]
            except sqlite3.IntegrityError as exc:
                # Two jobs of the batch alike, or a holder stored before: the chunks before the
                # refused one had no holder; their rows are rolled back with it.
                raise (_twins(jobs) or self._duplicate(conn, jobs[start:], first)) from exc
            if windowed:
                open_windows(conn, jobs, ids, now)
            return ids

        ids = self._conns.write(insert, f"storing {len(jobs)} job(s)", rows=len(rows))
        self._woken(delays)
        return ids

    @staticmethod
    def _duplicate(conn: sqlite3.Connection, jobs: Sequence[Job], below: int = _NO_ID) -> DuplicateJobError:
        """The error for a refused batch, naming the holder: a job stored before the batch (id below
        ``below``, the batch's first id), never one of the batch's own rows still in the transaction."""
        for job in jobs:
            row = conn.execute(_HOLDER, (job.queue, job.fingerprint, below)).fetchone()
            if row is not None:
                return DuplicateJobError(
                    f"a job of queue {job.queue!r} with the same fingerprint is waiting or running (id {row[0]}): "
                    "nothing was stored",
                    str(row[0]),
                )
        return DuplicateJobError("a job with the same queue and fingerprint is waiting or running: nothing was stored")

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        """Record tick ``tick`` of ``key`` and store ``job``, in one transaction; None when recorded before."""
        text = encode_payload(job.payload)
        delays: dict[str, float] = {}

        def store(conn: sqlite3.Connection) -> str | None:
            now = now_micros()
            stamp = micros(tick)
            if not conn.execute(
                "INSERT OR IGNORE INTO neoq_ticks (key, tick, recorded_at) VALUES (?, ?, ?)", (key, stamp, now)
            ).rowcount:
                return None
            run_after = now if job.run_after is None else micros(job.run_after)
            deadline = None if job.deadline is None else micros(job.deadline)
            try:
                job_id = conn.execute(
                    _INSERT, (job.queue, job.fingerprint, text, run_after, deadline, job.max_retries, now, job.priority)
                ).lastrowid
            except sqlite3.IntegrityError as exc:
                raise self._duplicate(conn, [job]) from exc  # rolls the tick back too
            conn.execute("UPDATE neoq_ticks SET job_id = ? WHERE key = ? AND tick = ?", (job_id, key, stamp))
            delays[job.queue] = max(0.0, (run_after - now) / 1e6)
            return str(job_id)

        job_id = self._conns.write(store, f"storing cron tick {tick.isoformat()} of {key!r}")
        if job_id is not None:
            self._woken(delays)
        return job_id

    def last_tick(self, key: str) -> datetime | None:
        row = self._conns.read(
            lambda conn: conn.execute("SELECT max(tick) FROM neoq_ticks WHERE key = ?", (key,)).fetchone(),
            "reading the last cron tick",
        )
        return when(row[0])

    # -- retention -------------------------------------------------------------------------

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        """Delete up to ``limit`` finished jobs older than their status's cutoff (one short transaction)."""
        cutoffs = {status.value: micros(cutoff) for status, cutoff in older_than.items()}
        if not cutoffs or limit <= 0:
            return 0
        clauses = " OR ".join("(status = ? AND finished_at < ?)" for _ in cutoffs)
        params: list[object] = [value for pair in cutoffs.items() for value in pair]

        def delete(conn: sqlite3.Connection) -> int:
            gone = conn.execute(
                f"DELETE FROM neoq_jobs WHERE id IN (SELECT id FROM neoq_jobs WHERE status <> 'new' AND ({clauses})"
                " LIMIT ?)",
                (*params, limit),
            ).rowcount
            # unique_for windows that have closed.
            conn.execute("DELETE FROM neoq_unique_windows WHERE enqueued_at + unique_for * 1e6 < ?", (now_micros(),))
            # Old cron ticks, but never a schedule's latest nor one younger than MIN_TICK_RETENTION.
            oldest = min(min(cutoffs.values()), now_micros() - int(MIN_TICK_RETENTION * 1e6))
            conn.execute(
                "DELETE FROM neoq_ticks WHERE tick < ? AND tick < (SELECT max(t.tick) FROM neoq_ticks t"
                " WHERE t.key = neoq_ticks.key)",
                (oldest,),
            )
            return gone

        return self._conns.write(delete, "pruning finished jobs", rows=limit)

    # -- inspecting ------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        key = _job_id(job_id)
        if key is None:
            return None
        row = self._conns.read(
            lambda conn: conn.execute(
                f"SELECT {COLUMNS}, {STATE} FROM neoq_jobs WHERE id = :id", {"id": key, "now": now_micros()}
            ).fetchone(),
            "reading a job",
        )
        return None if row is None else job_from_row(row, row[NCOLUMNS])

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        where = []
        params: dict[str, object] = {"now": now_micros(), "limit": limit}
        if queue is not None:
            where.append("queue = :queue")
            params["queue"] = queue
        if status is JobStatus.RUNNING:
            where.append("status = 'new' AND lease_owner IS NOT NULL AND run_after > :now")
        elif status is JobStatus.NEW:
            where.append("status = 'new' AND NOT (lease_owner IS NOT NULL AND run_after > :now)")
        elif status is not None:
            where.append("status = :status")
            params["status"] = status.value
        sql = f"SELECT {COLUMNS}, {STATE} FROM neoq_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT :limit"
        rows = self._conns.read(lambda conn: conn.execute(sql, params).fetchall(), "listing jobs")
        return [job_from_row(row, row[NCOLUMNS]) for row in rows]

    def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status: one pass over the (queue, status) index, and the running jobs
        (a live lease) among the 'new' ones through the due index; one snapshot for both."""

        def count(conn: sqlite3.Connection) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]]]:
            totals = conn.execute("SELECT queue, status, count(*) FROM neoq_jobs GROUP BY queue, status").fetchall()
            running = conn.execute(
                "SELECT queue, count(*) FROM neoq_jobs WHERE status = 'new' AND run_after > ?"
                " AND lease_owner IS NOT NULL GROUP BY queue",
                (now_micros(),),
            ).fetchall()
            return totals, running

        totals, running = self._conns.read(count, "counting jobs")
        out: dict[str, dict[str, int]] = {}
        for queue, status, number in totals:
            counts = out.get(queue)
            if counts is None:
                counts = out[queue] = dict.fromkeys(_STATES, 0)
            counts[status] += number
        for queue, number in running:
            counts = out[queue]
            counts["running"] = number
            counts["new"] -= number
        return out

    # -- managing --------------------------------------------------------------------------

    def retry_job(self, job_id: str) -> None:
        """A finished job runs again: NEW, due now, counters reset; a new token fences off any old holder."""
        key = _job_id(job_id)
        queue: list[str] = []

        def retry(conn: sqlite3.Connection) -> None:
            row = (
                None
                if key is None
                else conn.execute("SELECT queue, fingerprint, status FROM neoq_jobs WHERE id = ?", (key,)).fetchone()
            )
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row[2] == "new":
                return  # waiting or running: left alone
            try:
                conn.execute(
                    "UPDATE neoq_jobs SET status = 'new', run_after = ?, retries = 0, attempts = 0, error = NULL,"
                    " finished_at = NULL, ran_at = NULL, lease_owner = NULL, lease_token = lease_token + 1,"
                    " result = NULL, traceback = NULL, progress = NULL, progress_note = NULL WHERE id = ?",
                    (now_micros(), key),
                )
            except sqlite3.IntegrityError as exc:
                holder = conn.execute(_HOLDER, (row[0], row[1], _NO_ID)).fetchone()
                raise DuplicateJobError(
                    f"another job of queue {row[0]!r} with the same fingerprint is waiting or running"
                    + ("" if holder is None else f" (id {holder[0]})"),
                    None if holder is None else str(holder[0]),
                ) from exc
            queue.append(row[0])

        self._conns.write(retry, f"retrying job {job_id!r}")
        if queue:
            self._woken({queue[0]: 0.0})

    def cancel_job(self, job_id: str) -> None:
        """A waiting or running job becomes CANCELLED now; a running one's holder finds its lease lost
        at its next heartbeat and stops the handler. A finished job is left alone."""
        key = _job_id(job_id)

        def cancel(conn: sqlite3.Connection) -> None:
            row = None if key is None else conn.execute("SELECT status FROM neoq_jobs WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row[0] == "new":
                conn.execute(
                    "UPDATE neoq_jobs SET status = 'cancelled', finished_at = ?, lease_owner = NULL WHERE id = ?",
                    (now_micros(), key),
                )

        self._conns.write(cancel, f"cancelling job {job_id!r}")
