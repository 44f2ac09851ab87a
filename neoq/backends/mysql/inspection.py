"""Storing, reading and managing jobs: each call one short transaction (``Runner``).

Uniqueness is the database's: ``neoq_jobs_unique`` over (queue, fingerprint, live), where ``live``
is NULL once a job is finished, refuses a second live job with error 1062, which becomes
``DuplicateJobError`` naming the holder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pymysql

from ...errors import BackendConnectionError, DuplicateJobError, JobNotFoundError, NeoqError
from ...job import Job, JobStatus
from ...jsontext import compact_json
from ..base import PrepareJob
from .batches import INSERT, STREAM_MIN, Refused, escaper, insert_one_sql, insert_sql, stream
from .flow import has_windows, lock_windows, open_windows
from .pools import wrap
from .rows import JOB_SELECT, STATE, db_time, job_from_row, utc
from .store import Cursor, Runner

__all__ = ["Inspection"]

_ER_DUP_ENTRY = 1062
#: Rows of one INSERT statement of a batch not streamed (a statement must fit the server's max_allowed_packet).
_CHUNK = 2000
_STATES = ("new", "running", "processed", "failed", "cancelled")
_ROW = "(%s, %s, %s, COALESCE(%s, UTC_TIMESTAMP(6)), %s, %s, UTC_TIMESTAMP(6), %s)"


def _row_params(jobs: Sequence[Job], texts: Sequence[str]) -> list[Any]:
    params: list[Any] = []
    for job, text in zip(jobs, texts, strict=True):
        params += (
            job.queue,
            job.fingerprint,
            text,
            db_time(job.run_after),
            db_time(job.deadline),
            job.max_retries,
            int(job.priority),
        )
    return params


def _job_id(text: str) -> int | None:
    """The row id an id string names, or None: any other string is an unknown id, not an error."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


class Inspection:
    """Enqueue, ticks, reads and management calls. ``signal(queue)`` wakes this process's claims;
    ``held_here(job_id)`` is True while this process holds a transaction-mode claim on the job,
    and ``on_cancel(job_id)`` tells its handler."""

    def __init__(self, runner: Runner, *, signal: Callable[[str], None], on_cancel: Callable[[str], None]) -> None:
        self._runner = runner
        self._signal = signal
        self._on_cancel = on_cancel
        #: @@auto_increment_increment: the step between the ids of one multi-row INSERT.
        self.id_step = 1

    # -- producing -------------------------------------------------------------------------

    def _insert(
        self, cur: Cursor, jobs: Sequence[Job], chunk: int | None = None, texts: Sequence[str] | None = None
    ) -> list[str]:
        """INSERT ``jobs`` (``texts``: their payloads' JSON text, when known), ``chunk`` rows a statement
        (the server's packet size bounds one statement)."""
        if texts is None:
            texts = [compact_json(job.payload) for job in jobs]
        keys = {(job.queue, job.fingerprint) for job in jobs}
        if len(keys) < len(jobs):
            raise DuplicateJobError("two jobs of the batch have the same queue and fingerprint; none was stored")
        lock_windows(cur, jobs)  # flow.py: Job.unique_for
        if chunk is None or len(jobs) <= chunk:
            ids = self._insert_rows(cur, jobs, texts)
        else:
            ids = []
            for first in range(0, len(jobs), chunk):
                ids += self._insert_rows(cur, jobs[first : first + chunk], texts[first : first + chunk])
        open_windows(cur, jobs, ids)
        return ids

    def _insert_rows(self, cur: Cursor, jobs: Sequence[Job], texts: Sequence[str]) -> list[str]:
        conn = getattr(cur, "connection", None)
        if isinstance(conn, pymysql.connections.Connection):
            sql, params = insert_sql(escaper(conn), {}, jobs, texts), None
        else:  # a caller's connection of another driver (mysqlclient): its own parameter binding
            sql, params = INSERT + ",".join([_ROW] * len(jobs)), _row_params(jobs, texts)
        try:
            cur.execute(sql, params)
        except Exception as exc:  # PyMySQL's, or a caller's mysqlclient connection's IntegrityError
            if exc.args and exc.args[0] == _ER_DUP_ENTRY:
                raise self._duplicate(cur, [(job.queue, job.fingerprint or "") for job in jobs]) from None
            raise
        first = int(cur.lastrowid)
        return [str(first + index * self.id_step) for index in range(len(jobs))]

    def _duplicate(self, cur: Cursor, keys: Sequence[tuple[str, str]]) -> DuplicateJobError:
        """The error for a refused INSERT of jobs with these (queue, fingerprint), naming the live holder."""
        where = " OR ".join(["(queue = %s AND fingerprint = %s)"] * len(keys))
        params = [value for key in keys for value in key]
        cur.execute(f"SELECT id FROM neoq_jobs WHERE live = 1 AND ({where}) LIMIT 1", params)
        row = cur.fetchone()
        holder = str(row[0]) if row else None
        return DuplicateJobError(
            "a waiting or running job of the queue has the same fingerprint; nothing was stored", holder
        )

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, connection: Any) -> list[str]:
        """One job without ``unique_for`` is one autocommit INSERT (``enqueue_one``); a large batch
        without ``unique_for`` is prepared as it is written (``enqueue_stream``). Through a caller's
        connection, for a small batch, and with ``unique_for`` windows, every job is prepared first."""
        if connection is None:
            if len(jobs) == 1:
                job, text = prepare(jobs[0], 0)
                if job.unique_for is None:
                    return [self.enqueue_one(job, text)]
                return self.enqueue([job], None, [text])
            if len(jobs) >= STREAM_MIN and not any(getattr(job, "unique_for", None) is not None for job in jobs):
                return self.enqueue_stream(jobs, prepare)
        prepared = [prepare(job, index) for index, job in enumerate(jobs)]
        if not prepared:
            return []
        return self.enqueue([job for job, _ in prepared], connection, [text for _, text in prepared])

    def enqueue_one(self, job: Job, text: str) -> str:
        """Store one prepared job: one autocommit INSERT on a pooled connection, no cursor."""
        pool = self._runner.pool
        conn = pool.get()
        broken = False
        try:
            try:
                conn.query(insert_one_sql(escaper(conn), job, text))
            except pymysql.err.IntegrityError as exc:
                if exc.args and exc.args[0] == _ER_DUP_ENTRY:
                    with conn.cursor() as cur:
                        raise self._duplicate(cur, [(job.queue, job.fingerprint or "")]) from None
                raise
            job_id = str(conn.insert_id())  # type: ignore[no-untyped-call]
        except NeoqError:
            raise
        except (pymysql.err.MySQLError, OSError) as exc:
            error = wrap(self._runner.settings, exc, "enqueueing 1 jobs")
            broken = isinstance(error, BackendConnectionError)
            raise error from exc
        finally:
            pool.put(conn, broken=broken)
        self._signal(job.queue)
        return job_id

    def enqueue_stream(self, jobs: Sequence[object], prepare: PrepareJob) -> list[str]:
        """Prepare and store a large batch in one transaction, each chunk written while the next is
        prepared (``batches.stream``)."""

        def write(cur: Cursor) -> tuple[list[str], set[str]]:
            try:
                return stream(cur.connection, jobs, prepare, self.id_step)
            except Refused as refused:
                raise self._duplicate(cur, refused.keys) from None

        ids, queues = self._runner.run(f"enqueueing {len(jobs)} jobs", write)
        for queue in queues:
            self._signal(queue)
        return ids

    def enqueue(self, jobs: Sequence[Job], connection: Any, texts: Sequence[str] | None = None) -> list[str]:
        if connection is not None:
            # The caller's transaction: the jobs exist once it commits; a failing INSERT rolls back
            # itself only (MySQL's statement-level rollback), so the caller's transaction goes on.
            # A PyMySQL connection, or mysqlclient's (Django's default MySQL driver): both are DB-API.
            try:
                cur = connection.cursor()
                try:
                    return self._insert(cur, jobs, texts=texts)
                finally:
                    cur.close()
            except NeoqError:
                raise
            except Exception as exc:
                raise wrap(self._runner.settings, exc, "enqueueing in the caller's transaction") from exc
        # One INSERT statement is atomic on its own: autocommit, one round trip; a larger batch is
        # several statements in one transaction, and so is an enqueue that opens unique_for windows.
        write = len(jobs) > _CHUNK or has_windows(jobs)
        ids = self._runner.run(
            f"enqueueing {len(jobs)} jobs", lambda cur: self._insert(cur, jobs, _CHUNK, texts), write=write
        )
        for queue in {job.queue for job in jobs}:
            self._signal(queue)
        return ids

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        def store(cur: Cursor) -> str | None:
            cur.execute(
                "INSERT INTO neoq_ticks (tick_key, tick, recorded_at) VALUES (%s, %s, UTC_TIMESTAMP(6))"
                " ON DUPLICATE KEY UPDATE tick_key = tick_key",
                (key, db_time(tick)),
            )
            if cur.rowcount != 1:
                return None  # recorded before, by this process or another
            (job_id,) = self._insert(cur, [job])
            cur.execute(
                "UPDATE neoq_ticks SET job_id = %s WHERE tick_key = %s AND tick = %s", (job_id, key, db_time(tick))
            )
            return job_id

        job_id = self._runner.run("enqueueing a cron tick", store)
        if job_id is not None:
            self._signal(job.queue)
        return job_id

    def last_tick(self, key: str) -> datetime | None:
        def read(cur: Cursor) -> datetime | None:
            cur.execute("SELECT MAX(tick) FROM neoq_ticks WHERE tick_key = %s", (key,))
            row = cur.fetchone()
            return utc(row[0]) if row else None

        return self._runner.run("reading the last cron tick", read, write=False)

    # -- reading ---------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        key = _job_id(job_id)
        if key is None:
            return None

        def read(cur: Cursor) -> Job | None:
            cur.execute(JOB_SELECT + " WHERE j.id = %s", (key,))
            row = cur.fetchone()
            return None if row is None else job_from_row(row)

        return self._runner.run("reading a job", read, write=False)

    def list_jobs(self, queue: str | None, status: JobStatus | None, limit: int) -> list[Job]:
        where, params = [], []
        if queue is not None:
            where.append("j.queue = %s")
            params.append(queue)
        if status is not None:
            stored = "new" if status in (JobStatus.NEW, JobStatus.RUNNING) else status.value
            where.append("j.status = %s")
            params.append(stored)
            if stored == "new":
                where.append(f"({STATE}) = %s")
                params.append(status.value)
        sql = JOB_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY j.id DESC LIMIT %s"

        def read(cur: Cursor) -> list[Job]:
            cur.execute(sql, [*params, int(limit)])
            return [job_from_row(row) for row in cur.fetchall()]

        return self._runner.run("listing jobs", read, write=False)

    def stats(self) -> dict[str, dict[str, int]]:
        def read(cur: Cursor) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            cur.execute("SELECT queue, status, COUNT(*) FROM neoq_jobs GROUP BY queue, status")
            for queue, status, count in cur.fetchall():
                name = queue.decode("utf-8")
                counts.setdefault(name, dict.fromkeys(_STATES, 0))[status] = int(count)
            cur.execute(
                "SELECT j.queue, COUNT(*) FROM neoq_jobs j LEFT JOIN neoq_claims m ON m.job_id = j.id"
                f" WHERE j.status = 'new' AND ({STATE}) = 'running' GROUP BY j.queue"
            )
            for queue, count in cur.fetchall():
                row = counts.setdefault(queue.decode("utf-8"), dict.fromkeys(_STATES, 0))
                row["running"] = int(count)
                row["new"] = max(0, row["new"] - int(count))
            return counts

        return self._runner.run("counting jobs", read, write=False)

    # -- managing --------------------------------------------------------------------------

    def retry_job(self, job_id: str) -> None:
        key = _job_id(job_id)

        def retry(cur: Cursor) -> str | None:
            cur.execute("SELECT queue, status FROM neoq_jobs WHERE id = %s", (key,))
            row = cur.fetchone()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row[1] == "new":
                return None  # waiting or running: left as it is
            try:
                cur.execute(
                    "UPDATE neoq_jobs SET status = 'new', run_after = UTC_TIMESTAMP(6), retries = 0, attempts = 0,"
                    " snoozes = 0, error = NULL, finished_at = NULL, result = NULL, traceback = NULL,"
                    " lease_owner = NULL WHERE id = %s AND status <> 'new'",
                    (key,),
                )
            except pymysql.err.IntegrityError as exc:
                if exc.args and exc.args[0] == _ER_DUP_ENTRY:
                    cur.execute(
                        "SELECT o.id FROM neoq_jobs o JOIN neoq_jobs j ON o.queue = j.queue"
                        " AND o.fingerprint = j.fingerprint WHERE j.id = %s AND o.live = 1",
                        (key,),
                    )
                    holder = cur.fetchone()
                    raise DuplicateJobError(
                        f"job {job_id} cannot run again: another waiting or running job has its fingerprint",
                        str(holder[0]) if holder else None,
                    ) from None
                raise
            cur.execute("DELETE FROM neoq_attempts WHERE job_id = %s", (key,))
            cur.execute("DELETE FROM neoq_claims WHERE job_id = %s", (key,))
            cur.execute("DELETE FROM neoq_progress WHERE job_id = %s", (key,))
            cur.execute("DELETE FROM neoq_cancellations WHERE job_id = %s", (key,))
            return str(row[0].decode("utf-8"))

        if key is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        queue = self._runner.run("retrying a job", retry)
        if queue is not None:
            self._signal(queue)

    def cancel_job(self, job_id: str) -> None:
        """A waiting job ends CANCELLED now; a leased one too (the holder's heartbeat finds it so and
        stops its handler); one a transaction-mode claim holds (its row locked) gets a request that
        its holder's process polls for."""
        key = _job_id(job_id)
        if key is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")

        def cancel(cur: Cursor) -> bool:
            cur.execute("SELECT status FROM neoq_jobs WHERE id = %s FOR UPDATE SKIP LOCKED", (key,))
            row = cur.fetchone()
            if row is not None:
                if row[0] == "new":
                    cur.execute(
                        "UPDATE neoq_jobs SET status = 'cancelled', finished_at = UTC_TIMESTAMP(6), lease_owner = NULL"
                        " WHERE id = %s",
                        (key,),
                    )
                return False
            cur.execute(
                "SELECT status, lease_owner IS NOT NULL AND run_after > UTC_TIMESTAMP(6) FROM neoq_jobs WHERE id = %s",
                (key,),
            )
            row = cur.fetchone()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if row[0] != "new":
                return False
            if row[1]:
                # Leased: lease-mode statements hold a row for a moment only, so wait for it.
                cur.execute("SELECT status FROM neoq_jobs WHERE id = %s FOR UPDATE", (key,))
                locked = cur.fetchone()
                if locked is not None and locked[0] == "new":
                    cur.execute(
                        "UPDATE neoq_jobs SET status = 'cancelled', finished_at = UTC_TIMESTAMP(6), lease_owner = NULL"
                        " WHERE id = %s",
                        (key,),
                    )
                return False
            cur.execute(
                "INSERT INTO neoq_cancellations (job_id, requested_at) VALUES (%s, UTC_TIMESTAMP(6))"
                " ON DUPLICATE KEY UPDATE job_id = job_id",
                (key,),
            )
            return True

        if self._runner.run("cancelling a job", cancel):
            self._on_cancel(str(key))  # held in this process: stop it now (others poll for the request)

    def prune(self, older_than: dict[JobStatus, datetime], limit: int) -> int:
        def delete(cur: Cursor) -> int:
            deleted = 0
            for status, cutoff in older_than.items():
                if deleted >= limit:
                    break
                cur.execute(
                    "SELECT id FROM neoq_jobs WHERE status = %s AND finished_at < %s LIMIT %s",
                    (status.value, db_time(cutoff), int(limit - deleted)),
                )
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    continue
                marks = ",".join(["%s"] * len(ids))
                cur.execute(f"DELETE FROM neoq_jobs WHERE status = %s AND id IN ({marks})", [status.value, *ids])
                deleted += cur.rowcount
                cur.execute(f"DELETE FROM neoq_attempts WHERE job_id IN ({marks})", ids)
                cur.execute(f"DELETE FROM neoq_cancellations WHERE job_id IN ({marks})", ids)
                cur.execute(f"DELETE FROM neoq_claims WHERE job_id IN ({marks})", ids)
                cur.execute(f"DELETE FROM neoq_progress WHERE job_id IN ({marks})", ids)
            return deleted

        return self._runner.run("pruning jobs", delete)
