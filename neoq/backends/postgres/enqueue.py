"""Storing jobs in PostgreSQL: one job in one prepared statement, a small batch in one INSERT, a
large one with COPY (prepared while it is written), through a caller's connection inside its
transaction, and cron ticks once each. Every enqueue notifies its queues inside its transaction."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import PoolTimeout

from ...errors import ConfigurationError, DuplicateJobError, NeoqError
from ...job import Job
from ...jsontext import compact_json
from ..base import PrepareJob
from .batch import (
    _COPY_CHUNK,
    _COPY_MIN,
    _NULL,
    _batch_params,
    _check_batch,
    _copy_groups,
    _copy_json,
    _copy_text,
    _copy_time,
    _CopyRow,
    _duplicate_params,
    _in_batch,
    _Stream,
)
from .common import CHANNEL, Conn
from .flow import open_windows
from .pools import Connections
from .queries import QUERIES
from .state import _Pools
from .wire import _AUX_STATEMENTS, _CHANNEL_B, _Command, _exchange_prepared, _Hot

#: ``Job.priority`` 0 as the enqueue statement's text parameter, made once.
_PRIORITY_ZERO = b"0"

#: The same text the job was validated with (neoq.job.encode_payload).
_dumps = compact_json


@dataclass(frozen=True, kw_only=True)
class Enqueuer:
    """What ``PostgresBackend.enqueue`` and ``enqueue_tick`` do, given narrow callbacks.

    ``conns``: the backend's connections; ``hot``: its one-job statement; ``require``: the pools
    of the current ``open()``, opening them in a forked child; ``barrier``: runs before writing
    (the lease mode's batched outcomes go first); ``local_enqueue`` and ``local_undo``: tell this
    process's waiting claims an enqueue is on its way (and that it stored nothing); ``signal``:
    wake this process's claims of the queues.
    """

    conns: Connections
    hot: _Hot
    require: Callable[[], _Pools]
    barrier: Callable[[], None]
    local_enqueue: Callable[[set[str]], list[Any]]
    local_undo: Callable[[list[Any]], None]
    signal: Callable[[set[str]], None]

    def enqueue(self, jobs: Sequence[Job], connection: Any) -> list[str]:
        if not jobs:
            return []
        if connection is None and len(jobs) == 1 and jobs[0].unique_for is None:
            return [self._enqueue_single(jobs[0], _dumps(jobs[0].payload))]
        _check_batch(jobs)
        return self._store(jobs, [_dumps(job.payload) for job in jobs], connection)

    def enqueue_prepared(self, jobs: Sequence[object], prepare: PrepareJob, connection: Any) -> list[str]:
        """Prepare each job of a large batch as COPY sends it (``_enqueue_stream``), so the server
        stores the rows sent while the client prepares the next; keep the JSON text ``prepare`` made.

        Through a caller's connection, for a small batch, and for a batch that mixes jobs with
        and without ``run_after`` (two COPYs, so rows do not go in batch order), every job is
        prepared first, as the default does.
        """
        count = len(jobs)
        if connection is None and count == 1:
            job, text = prepare(jobs[0], 0)
            if job.unique_for is None:
                return [self._enqueue_single(job, text)]
            return self._store([job], [text], None)
        if connection is None and count >= _COPY_MIN:
            unique, timed, prioritized = _shape(jobs)
            if not unique and (timed == 0 or timed == count):
                return self._enqueue_stream(jobs, prepare, with_run_after=timed == count, prioritized=prioritized)
        pairs = [prepare(job, index) for index, job in enumerate(jobs)]
        prepared = [job for job, _ in pairs]
        if not prepared:
            return []
        _check_batch(prepared)
        return self._store(prepared, [text for _, text in pairs], connection)

    def _enqueue_stream(
        self, jobs: Sequence[object], prepare: PrepareJob, *, with_run_after: bool, prioritized: bool
    ) -> list[str]:
        """A large batch prepared while it is written: ``_enqueue_copy`` reads rows from ``_stream``."""
        stream = _Stream()
        rows = self._stream(jobs, prepare, stream)
        try:
            with self.conns.aux("enqueueing jobs") as conn:
                try:
                    ids = _enqueue_copy(conn, len(jobs), [(with_run_after, rows)], stream.queues, None, prioritized)
                except pg_errors.UniqueViolation:
                    if stream.error is not None:  # pragma: no cover - psycopg 3.3 raises the batch's error itself
                        # The server refused a row before the batch's own error ended the COPY:
                        # report the batch's error, as if every job had been checked first.
                        raise stream.error from None
                    raise _duplicate(conn, _duplicate_params(stream.keys)) from None
        except BaseException:
            self.local_undo(stream.local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self.signal(stream.queues)
        return ids

    def _stream(self, jobs: Sequence[object], prepare: PrepareJob, stream: _Stream) -> Iterator[_CopyRow]:
        """Prepare ``jobs`` one by one as COPY reads their rows; record what ``_Stream`` lists.

        Errors keep the precedence of checking every job first: an invalid job is reported before
        a duplicate within the batch, wherever each is. A duplicate's row is not sent (the server
        would refuse it with an error that names no job); the jobs after it are only prepared.
        Raising here ends the COPY, and its transaction rolls back.
        """
        seen = stream.keys
        duplicate: DuplicateJobError | None = None
        try:
            for index, item in enumerate(jobs):
                job, text = prepare(item, index)
                first = seen.setdefault((job.queue, job.fingerprint or ""), index)
                if first != index and duplicate is None:
                    duplicate = _in_batch(first, index, job)
                if duplicate is None:
                    yield index, job, text
        except NeoqError as exc:
            stream.error = exc
            raise
        if duplicate is not None:
            stream.error = duplicate
            raise duplicate
        stream.queues.update(queue for queue, _ in seen)
        # Before the commit that sends the notification (see notices.LocalNotices.enqueued).
        stream.local = self.local_enqueue(stream.queues)

    def _store(self, jobs: Sequence[Job], payloads: list[str], connection: Any) -> list[str]:
        """Store prepared ``jobs`` (no duplicates among them) with their payloads' JSON text."""
        unique = any(job.unique_for is not None for job in jobs)
        if connection is not None:
            return self._enqueue_through(connection, _batch_params(jobs, payloads), jobs if unique else None)
        queues = {job.queue for job in jobs}
        local = self.local_enqueue(queues)
        try:
            with self.conns.aux("enqueueing jobs") as conn:
                try:
                    if len(jobs) >= _COPY_MIN:
                        after = functools.partial(_open_windows_of, jobs) if unique else None
                        groups = _copy_groups(jobs, payloads)
                        ids = _enqueue_copy(conn, len(jobs), groups, queues, after, any(job.priority for job in jobs))
                    elif unique:  # the windows are opened in the insert's transaction (flow.py)
                        with conn.transaction():
                            rows = conn.execute(QUERIES["enqueue"], _batch_params(jobs, payloads)).fetchall()
                            ids = [str(row[0]) for row in rows]
                            open_windows(conn, jobs, ids)
                    else:
                        params = _batch_params(jobs, payloads)
                        ids = [str(row[0]) for row in conn.execute(QUERIES["enqueue"], params).fetchall()]
                except pg_errors.UniqueViolation:
                    raise _duplicate(conn, _batch_params(jobs, payloads)) from None
        except BaseException:
            self.local_undo(local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self.signal(queues)
        return ids

    def _enqueue_single(self, job: Job, payload: str) -> str:
        """One prepared job, through no caller's connection: ``_store`` without what a batch needs.

        On the aux connection a previous single enqueue kept (``_Pools.spare``), and kept again
        for the next one.
        """
        pools = self.require()
        self.barrier()  # as in Connections.aux
        conns = self.conns
        queues = {job.queue}
        local = self.local_enqueue(queues)
        try:
            conn, until = conns.checkout(pools)
            try:
                try:
                    job_id = self._enqueue_one(conn, job, payload)
                except pg_errors.UniqueViolation:
                    raise _duplicate(conn, _batch_params((job,), [payload])) from None
            finally:
                conns.keep_spare(pools, conn, until)
            conns.unreachable = False
        except (PoolTimeout, psycopg.Error) as exc:
            self.local_undo(local)
            raise conns.aux_error(exc, "enqueueing jobs") from exc
        except BaseException:
            self.local_undo(local)
            raise
        # Claims of this process need not wait for the notification's round trip.
        self.signal(queues)
        return job_id

    def _enqueue_one(self, conn: Conn, job: Job, payload: str) -> str:
        """One job: one prepared statement, parameters sent as text (no adaptation), one round trip."""
        encoding = conn.info.encoding
        run_after, deadline, max_retries = job.run_after, job.deadline, job.max_retries
        values = (
            job.queue.encode(encoding),
            (job.fingerprint or "").encode(encoding),
            payload.encode(encoding),
            None if run_after is None else run_after.isoformat().encode(),
            None if deadline is None else deadline.isoformat().encode(),
            None if max_retries is None else str(max_retries).encode(),
            _PRIORITY_ZERO if not job.priority else str(job.priority).encode(),
            _CHANNEL_B,
        )
        hot = self.hot
        command: tuple[_Command] = ((hot.enqueue_one, values, hot.prepared),)
        value = _exchange_prepared(conn, command, _AUX_STATEMENTS, hot.prepared)[0].get_value(0, 0)
        assert value is not None
        return str(int.from_bytes(value, "big", signed=True))

    def _enqueue_through(self, connection: Any, params: dict[str, Any], unique: Sequence[Job] | None) -> list[str]:
        """Insert through the caller's connection, inside its transaction; never commit it.

        ``unique``: the jobs, when some have a ``unique_for`` (their windows open in the same step).
        """
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(f"connection must be a psycopg.Connection (sync), not {type(connection).__name__}")
        try:
            cur = connection.cursor(row_factory=tuple_row)
            if connection.autocommit and unique is None:
                # One statement is its own transaction: all or nothing, notified on its commit.
                try:
                    rows = cur.execute(QUERIES["enqueue"], params).fetchall()
                except pg_errors.UniqueViolation:
                    raise _duplicate(connection, params) from None
            else:
                # A savepoint keeps a duplicate from aborting the caller's transaction (and in
                # autocommit, ``transaction()`` makes the insert and the windows one).
                with connection.transaction() if connection.autocommit else nullcontext():
                    cur.execute("SAVEPOINT neoq_enqueue")
                    try:
                        rows = cur.execute(QUERIES["enqueue"], params).fetchall()
                        if unique is not None:
                            open_windows(connection, unique, [str(row[0]) for row in rows])
                    except (pg_errors.UniqueViolation, DuplicateJobError) as exc:
                        cur.execute("ROLLBACK TO SAVEPOINT neoq_enqueue")
                        duplicate = exc if isinstance(exc, DuplicateJobError) else _duplicate(connection, params)
                        cur.execute("RELEASE SAVEPOINT neoq_enqueue")
                        raise duplicate from None
                    cur.execute("RELEASE SAVEPOINT neoq_enqueue")
        except psycopg.Error as exc:
            raise self.conns.wrap(exc, "enqueueing jobs through the caller's connection") from exc
        return [str(row[0]) for row in rows]

    def enqueue_tick(self, job: Job, key: str, tick: datetime) -> str | None:
        """``PostgresBackend.enqueue_tick``: the job of ``key``'s ``tick``, unless it was enqueued."""
        params = {
            "queues": [job.queue],
            "fingerprints": [job.fingerprint or ""],
            "payloads": [_dumps(job.payload)],
            "run_afters": [job.run_after],
            "deadlines": [job.deadline],
            "max_retries": [job.max_retries],
            "priorities": [job.priority],
            "channel": CHANNEL,
        }
        with self.conns.aux("enqueueing a cron tick") as conn:
            try:
                with conn.transaction():
                    # A concurrent insert of the same tick waits here for the first to commit.
                    if conn.execute(QUERIES["record_tick"], {"key": key, "tick": tick}).fetchone() is None:
                        return None
                    row = conn.execute(QUERIES["enqueue"], params).fetchone()
                    assert row is not None
                    conn.execute(QUERIES["tick_job"], {"job_id": row[0], "key": key, "tick": tick})
            except pg_errors.UniqueViolation:
                raise _duplicate(conn, params) from None
        self.signal({job.queue})
        return str(row[0])


def _shape(jobs: Sequence[object]) -> tuple[bool, int, bool]:
    """Of a batch not yet prepared: whether a job has ``unique_for``, how many have ``run_after``,
    whether a job has a priority (else COPY leaves the column to its default, 0). One pass."""
    unique = prioritized = False
    timed = 0
    for job in jobs:
        if isinstance(job, Job):
            unique = unique or job.unique_for is not None
            prioritized = prioritized or job.priority != 0
            timed += job.run_after is not None
    return unique, timed, prioritized


def _open_windows_of(jobs: Sequence[Job], conn: Conn, ids: list[str]) -> None:
    open_windows(conn, jobs, ids)


def _enqueue_copy(
    conn: Conn,
    count: int,
    groups: Iterable[tuple[bool, Iterable[_CopyRow]]],
    queues: set[str],
    after: Callable[[Conn, list[str]], None] | None = None,
    prioritized: bool = True,
) -> list[str]:
    """A large batch: ``count`` ids reserved in one statement, rows written with COPY, in one
    transaction; return the ids in batch order.

    ``groups``: one COPY each, whether its rows have a ``run_after``, and its rows. Rows may
    be made as they are read (``_stream``): each chunk goes out as soon as it is built, so the
    server stores it while the client makes the next. ``queues`` are notified once every row
    is written. Jobs without ``run_after`` get the column's default, the transaction's
    ``now()`` (as the INSERT's ``coalesce(run_after, now())``): their COPY leaves it out.
    ``after(conn, ids)`` runs in the transaction once the rows are in (``open_windows``).
    Without ``prioritized`` (every priority 0), the COPY leaves the priority to its default too.
    """
    with conn.transaction():
        row = conn.execute(QUERIES["reserve_ids"], {"n": count}).fetchone()
        assert row is not None and row[0] is not None
        ids: list[str] = row[0].split(",")
        cur = conn.cursor()
        for with_run_after, rows in groups:
            columns = "id, queue, fingerprint, payload, deadline, max_retries"
            columns += (", priority" if prioritized else "") + (", run_after" if with_run_after else "")
            with cur.copy(f"COPY neoq_jobs ({columns}) FROM STDIN") as copy:
                lines = []
                for index, job, payload in rows:
                    deadline, max_retries = job.deadline, job.max_retries
                    line = (
                        f"{ids[index]}\t{_copy_text(job.queue)}\t{_copy_text(job.fingerprint or '')}\t"
                        f"{_copy_json(payload)}\t{_NULL if deadline is None else deadline.isoformat()}\t"
                        f"{_NULL if max_retries is None else max_retries}"
                    )
                    if prioritized:
                        line = f"{line}\t{job.priority}"
                    if with_run_after:
                        line = f"{line}\t{_copy_time(job.run_after)}"
                    lines.append(line)
                    if len(lines) == _COPY_CHUNK:
                        lines.append("")
                        copy.write("\n".join(lines))
                        lines = []
                if lines:
                    lines.append("")
                    copy.write("\n".join(lines))
        if after is not None:
            after(conn, ids)
        conn.execute(QUERIES["notify_queues"], {"queues": sorted(queues), "channel": CHANNEL})
    return ids


def _duplicate(conn: Conn | psycopg.Connection[Any], params: dict[str, Any]) -> DuplicateJobError:
    """The error for a unique violation of ``params``' jobs: names the job that holds the fingerprint."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(QUERIES["find_duplicate"], {"queues": params["queues"], "fingerprints": params["fingerprints"]})
        .fetchone()
    )
    holder = None if row is None else str(row[0])
    if holder is None:
        return DuplicateJobError("a job with the same queue and fingerprint is still new")
    return DuplicateJobError(f"job {holder} with the same queue and fingerprint is still new", holder)
