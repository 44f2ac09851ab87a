"""Writing jobs: their rows as SQL literals escaped by the connection, a large batch streamed.

A row's values are SQL literals escaped by PyMySQL's own escaping, as its parameter binding
does, at a fraction of its cost (a queue name is escaped once a batch, a hex fingerprint never).

A large batch (``stream``) is one transaction of multi-row INSERTs, ``CHUNK`` rows each, each
prepared as it is written: a chunk is sent, then the next one is prepared and escaped while the
server stores it, and only then is its result read (PyMySQL's ``query`` split in its two steps,
``_execute_command`` and ``_read_query_result``; without them, each chunk waits for its result).
One statement at most is ever outstanding, so the protocol stays request and response.

Ids: the rows of one multi-row INSERT take consecutive ids from ``LAST_INSERT_ID()`` (PyMySQL's
``insert_id``), ``@@auto_increment_increment`` apart: InnoDB reserves one block of ids for a
"simple insert" (its row count known in advance) in ``innodb_autoinc_lock_mode`` 1 and 2 alike
(an INSERT ... SELECT or LOAD DATA may get ids interleaved with another statement's; neoq sends neither).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pymysql
from pymysql.constants import COMMAND, SERVER_STATUS

from ...errors import DuplicateJobError
from ...job import Job
from ..base import PrepareJob
from .rows import db_time

__all__ = ["CHUNK", "INSERT", "STREAM_MIN", "Refused", "escaper", "insert_one_sql", "insert_sql", "stream"]

#: Rows of one INSERT statement of a streamed batch: small enough that the server's work on one
#: chunk overlaps the client's on the next, large enough that a statement's overhead is small.
CHUNK = 500
#: The smallest batch that is streamed; a smaller one is one autocommit INSERT.
STREAM_MIN = CHUNK + 1
#: A fingerprint neoq computed (a SHA-256 hex digest) needs no escaping.
_HEX = re.compile(r"[0-9a-f]{1,256}")
_ER_DUP_ENTRY = 1062
_NOW = "UTC_TIMESTAMP(6)"
INSERT = (
    "INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, deadline, max_retries, created_at, priority)"
    " VALUES "
)
_INSERT_PLAIN = "INSERT INTO neoq_jobs (queue, fingerprint, payload, run_after, created_at) VALUES "
_SEND = getattr(pymysql.connections.Connection, "_execute_command", None)
_READ = getattr(pymysql.connections.Connection, "_read_query_result", None)


class Refused(Exception):
    """The server refused a chunk of the batch as a duplicate of a live job: ``keys`` are the
    chunk's (queue, fingerprint) pairs, for finding the holder."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__("duplicate")
        self.keys = keys


def escaper(conn: Any) -> Callable[[str], str]:
    """A str as a quoted SQL literal, escaped as ``conn`` escapes (honouring NO_BACKSLASH_ESCAPES)."""
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return conn.escape  # type: ignore[no-any-return]
    escape_string = pymysql.converters.escape_string
    return lambda text: "'" + escape_string(text) + "'"


def _datetime_literal(value: datetime) -> str:
    naive = db_time(value)
    return f"'{naive.isoformat(' ')}'" if naive is not None else "NULL"


def insert_sql(escape: Callable[[str], str], queues: dict[str, str], jobs: Sequence[Job], texts: Sequence[str]) -> str:
    """The INSERT of ``jobs`` (``texts``: their payloads' JSON text; ``queues``: the escaped queue
    names seen so far). When no job sets a deadline, a max_retries or a priority, those columns are
    left to their defaults: a shorter statement, and less for the server to parse and evaluate."""
    if all(job.deadline is None and job.max_retries is None and job.priority == 0 for job in jobs):
        rows = [_plain_row(escape, queues, job, text) for job, text in zip(jobs, texts, strict=True)]
        return _INSERT_PLAIN + ",".join(rows)
    rows = [_row(escape, queues, job, text) for job, text in zip(jobs, texts, strict=True)]
    return INSERT + ",".join(rows)


def insert_one_sql(escape: Callable[[str], str], job: Job, text: str) -> str:
    """``insert_sql`` of one job."""
    if job.deadline is None and job.max_retries is None and job.priority == 0:
        return _INSERT_PLAIN + _plain_row(escape, {}, job, text)
    return INSERT + _row(escape, {}, job, text)


def _plain_row(escape: Callable[[str], str], queues: dict[str, str], job: Job, text: str) -> str:
    queue = queues.get(job.queue)
    if queue is None:
        queue = queues[job.queue] = escape(job.queue)
    fingerprint = job.fingerprint or ""
    fingerprint = "'" + fingerprint + "'" if _HEX.fullmatch(fingerprint) else escape(fingerprint)
    run_after = job.run_after
    return (
        f"({queue},{fingerprint},{escape(text)},{_NOW if run_after is None else _datetime_literal(run_after)},{_NOW})"
    )


def _row(escape: Callable[[str], str], queues: dict[str, str], job: Job, text: str) -> str:
    queue = queues.get(job.queue)
    if queue is None:
        queue = queues[job.queue] = escape(job.queue)
    fingerprint = job.fingerprint or ""
    fingerprint = "'" + fingerprint + "'" if _HEX.fullmatch(fingerprint) else escape(fingerprint)
    run_after, deadline, max_retries = job.run_after, job.deadline, job.max_retries
    return (
        f"({queue},{fingerprint},{escape(text)},"
        f"{_NOW if run_after is None else _datetime_literal(run_after)},"
        f"{'NULL' if deadline is None else _datetime_literal(deadline)},"
        f"{'NULL' if max_retries is None else int(max_retries)},{_NOW},{int(job.priority)})"
    )


def stream(conn: Any, jobs: Sequence[object], prepare: PrepareJob, step: int) -> tuple[list[str], set[str]]:
    """Prepare and INSERT ``jobs`` on ``conn`` (in the caller's transaction), ``CHUNK`` rows a
    statement; return their ids and their queues.

    Errors keep the precedence of checking every job first: an invalid job (``prepare`` raises)
    before a duplicate within the batch, before a duplicate of a stored job (``Refused``), wherever
    each is. Once one is found, the jobs after it are only prepared. The caller rolls back on any error.
    """
    pipelined = _SEND is not None and _READ is not None and isinstance(conn, pymysql.connections.Connection)
    escape = escaper(conn)
    queues: dict[str, str] = {}
    seen: dict[tuple[str, str], int] = {}
    ids: list[str] = []
    chunk: list[Job] = []
    texts: list[str] = []
    keys: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] | None = None  # the keys of the chunk sent, its result not read
    refused: list[tuple[str, str]] | None = None
    duplicate: DuplicateJobError | None = None

    def read(sent: list[tuple[str, str]]) -> None:
        nonlocal refused
        try:
            conn._affected_rows = _READ(conn)  # type: ignore[misc]
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == _ER_DUP_ENTRY:
                refused = sent
                return
            raise
        first = int(conn.insert_id())
        ids.extend([str(first + index * step) for index in range(len(sent))])

    def send(sql: str, sent: list[tuple[str, str]]) -> None:
        nonlocal pending
        if pipelined:
            _SEND(conn, COMMAND.COM_QUERY, sql.encode(conn.encoding))  # type: ignore[misc]
            pending = sent
            return
        with conn.cursor() as cur:
            try:
                cur.execute(sql)
            except Exception as exc:  # PyMySQL's, or another driver's IntegrityError
                if exc.args and exc.args[0] == _ER_DUP_ENTRY:
                    raise Refused(sent) from None
                raise
            first = int(cur.lastrowid)
        ids.extend([str(first + index * step) for index in range(len(sent))])

    try:
        for index, item in enumerate(jobs):
            job, text = prepare(item, index)
            key = (job.queue, job.fingerprint or "")
            first = seen.setdefault(key, index)
            if first != index and duplicate is None:
                duplicate = DuplicateJobError(
                    f"jobs {first} and {index} of the batch have the same queue {job.queue!r} and fingerprint;"
                    " none was stored"
                )
            if duplicate is not None or refused is not None:
                continue
            chunk.append(job)
            texts.append(text)
            keys.append(key)
            if len(chunk) == CHUNK:
                sql, sent = insert_sql(escape, queues, chunk, texts), keys
                chunk, texts, keys = [], [], []
                if pending is not None:
                    read(pending)
                    pending = None
                if refused is None:
                    send(sql, sent)
        if pending is not None:
            read(pending)
            pending = None
        if duplicate is not None:
            raise duplicate
        if refused is None and chunk:
            send(insert_sql(escape, queues, chunk, texts), keys)
            if pending is not None:
                read(pending)
                pending = None
        if refused is not None:
            raise Refused(refused)
    except BaseException:
        if pending is not None:  # read the statement's result: the connection stays usable
            try:
                _READ(conn)  # type: ignore[misc]
            except Exception:  # its own error: the caller rolls back either way
                pass
        raise
    return ids, set(queues)
