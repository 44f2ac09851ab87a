"""The PostgreSQL backend's hot path on the wire: hand-driven libpq pipelines of prepared statements."""

from __future__ import annotations

import math
import re
import select
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.errors import InvalidSqlStatementName, error_from_result

from ...job import JobStatus
from .common import _SAVEPOINT, CHANNEL
from .queries import QUERIES

# -- the hot path on the wire --------------------------------------------------------------------
#
# Claiming, counting an attempt and settling a processed job run once per job, always with the
# same statements. They go to the server as protocol-level prepared statements, in libpq pipelines
# sent straight through the connection's ``pgconn``: one round trip each, parameters bound, and
# none of the per-statement Python work of psycopg's cursors and ``pipeline()`` (which, on the
# pure-Python implementation, cost more CPU per job than the server spends on it). The connection
# is left the way psycopg expects it (out of pipeline mode, no pending results), so the handler
# and every other path use it through psycopg as usual.


def _numbered(query: str) -> tuple[bytes, tuple[str, ...]]:
    """A named query's ``%(name)s`` placeholders as ``$n``, and the names in ``$n`` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query).encode(), tuple(names)


#: name -> (wire name, SQL with $n placeholders, parameter names in order)
_PREPARED = {
    name: (f"neoq_{name}".encode(), *_numbered(QUERIES[name]))
    for name in (
        *("claim", "claim_probe", "claim_idle", "settle", "settle_processed", "count_attempt", "enqueue_one"),
        *("claim_plain", "claim_limited", "claim_probe_limited"),
    )
}
_WORK_STATEMENTS = ("claim", "claim_plain", "claim_probe", "claim_idle", "settle", "settle_processed")
#: Prepared on a work connection the first time it claims for a queue with a global limit.
_LIMITED_STATEMENTS = ("claim_limited", "claim_probe_limited")
_COUNTER_STATEMENTS = ("count_attempt",)
_AUX_STATEMENTS = ("enqueue_one",)
_BEGIN = b"BEGIN"
_COMMIT = b"COMMIT"
_ROLLBACK = b"ROLLBACK"
_SAVEPOINT_B = _SAVEPOINT.encode()
_RELEASE_SAVEPOINT_B = b"RELEASE SAVEPOINT neoq_handler"
_ROLLBACK_TO_SAVEPOINT_B = b"ROLLBACK TO SAVEPOINT neoq_handler"
_PROCESSED_B = JobStatus.PROCESSED.value.encode()
_CHANNEL_B = CHANNEL.encode()
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_BAD = pq.ConnStatus.BAD
_IDLE = pq.TransactionStatus.IDLE


class _Hot(NamedTuple):
    """The hot path's statements: prepared (by name), or sent whole each time (PgBouncer)."""

    prepared: bool
    claim: bytes
    claim_plain: bytes
    claim_probe: bytes
    claim_idle: bytes
    settle: bytes
    settle_processed: bytes
    counter: bytes
    enqueue_one: bytes


_HOT_NAMES = (
    *("claim", "claim_plain", "claim_probe", "claim_idle", "settle", "settle_processed", "count_attempt"),
    "enqueue_one",
)
_HOT_PREPARED = _Hot(True, *(_PREPARED[name][0] for name in _HOT_NAMES))
_HOT_UNNAMED = _Hot(False, *(_PREPARED[name][1] for name in _HOT_NAMES))

#: One command of an exchange: (SQL text or prepared statement name, text parameters, prepared?).
_Command = tuple[bytes, "Sequence[bytes | None] | None", bool]


def _prepare(conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
    """Prepare the named hot-path statements on ``conn`` (protocol level, no transaction)."""
    pgconn = conn.pgconn
    with conn.lock:
        for name in names:
            wire, text, _ = _PREPARED[name]
            result = pgconn.prepare(wire, text)
            if result.status == _FATAL_ERROR:
                if (result.error_field(pq.DiagnosticField.SQLSTATE) or b"") == b"42P05":
                    continue  # prepared already (a pool connection configured twice)
                raise _result_error(conn, result)


def _result_error(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> psycopg.Error:
    if not result.error_field(pq.DiagnosticField.SQLSTATE) or conn.pgconn.status == _BAD:
        # No SQLSTATE: the client's side failed (the connection is lost), as psycopg reports it.
        return psycopg.OperationalError(result.get_error_message(conn.info.encoding).strip() or "connection lost")
    return error_from_result(result, conn.info.encoding)


def _exchange(
    conn: psycopg.Connection[Any], commands: Sequence[_Command], *, close_after: bool = False
) -> list[pq.abc.PGresult]:
    """Send ``commands`` in one libpq pipeline, wait for every result, return them (binary rows).

    Raises the psycopg error of the first command that failed (the later ones were skipped by
    the server). A connection that breaks half-way is closed, so the pool discards it.
    ``close_after``: when every command succeeded, close the connection before its lock is let
    go, so no other thread's statement can run on it in between.
    """
    pgconn = conn.pgconn
    with conn.lock:
        if len(commands) == 1 and not close_after:
            results = [_send_receive(pgconn, commands[0])]
        else:
            _send(pgconn, commands)
            results = _receive(conn, len(commands))
            if close_after and all(result.status != _FATAL_ERROR for result in results):
                pgconn.finish()
    for result in results:
        if result.status == _FATAL_ERROR:
            raise _result_error(conn, result)
    return results


def _prepare_again(conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
    """Someone deallocated neoq's statements on ``conn`` (``DEALLOCATE ALL``, a pooler that
    resets sessions): end the transaction the failure left, if any, and prepare ``names`` again."""
    conn.rollback()  # no round trip on a connection that is idle
    _prepare(conn, names)


def _exchange_prepared(
    conn: psycopg.Connection[Any], commands: Sequence[_Command], names: Sequence[str], prepared: bool
) -> list[pq.abc.PGresult]:
    """``_exchange``; when ``prepared`` statements (``names``) were deallocated meanwhile, prepare
    them again (``_prepare_again``) and send ``commands`` once more."""
    try:
        return _exchange(conn, commands)
    except InvalidSqlStatementName:
        if not prepared:
            raise
        _prepare_again(conn, names)
        return _exchange(conn, commands)


def _send(pgconn: pq.abc.PGconn, commands: Sequence[_Command]) -> None:
    """Send ``commands`` and a sync in one libpq pipeline, flushed to the socket (one write: libpq
    flushes at each sync); the results are left to ``_receive``. A failure closes the connection
    (its state is unknown)."""
    if pgconn.status == _BAD:
        raise psycopg.OperationalError("the connection is closed")
    pgconn.enter_pipeline_mode()
    try:
        for text, params, prepared in commands:
            if prepared:
                pgconn.send_query_prepared(text, params, result_format=pq.Format.BINARY)
            else:
                pgconn.send_query_params(text, params, result_format=pq.Format.BINARY)
        pgconn.pipeline_sync()
        while pgconn.flush():
            _wait_fds((pgconn.socket,), None, write=True)
    except BaseException:
        pgconn.finish()
        raise


def _send_receive(pgconn: pq.abc.PGconn, command: _Command) -> pq.abc.PGresult:
    """``_send`` and ``_receive`` of one command, outside pipeline mode: the same messages
    (libpq sends a sync after it), with fewer calls. A failure closes the connection."""
    if pgconn.status == _BAD:
        raise psycopg.OperationalError("the connection is closed")
    text, params, prepared = command
    try:
        if prepared:
            pgconn.send_query_prepared(text, params, result_format=pq.Format.BINARY)
        else:
            pgconn.send_query_params(text, params, result_format=pq.Format.BINARY)
        socket = pgconn.socket
        while pgconn.flush():
            _wait_fds((socket,), None, write=True)
        result = _get_result(pgconn, socket)
        if result is None:
            raise psycopg.OperationalError("the connection was lost")
        if _get_result(pgconn, socket) is not None:
            raise psycopg.OperationalError("unexpected results from the server")
    except BaseException:
        pgconn.finish()  # its state is unknown: drop it
        raise
    return result


def _receive(conn: psycopg.Connection[Any], count: int) -> list[pq.abc.PGresult]:
    """The results of the ``count`` commands ``_send`` sent, then its sync; the pipeline ends there.

    Failed commands come back as results (``FATAL_ERROR``, and ``PIPELINE_ABORTED`` for those the
    server skipped after it); a connection that breaks is closed and raises.
    """
    pgconn = conn.pgconn
    results: list[pq.abc.PGresult] = []
    try:
        socket = pgconn.socket
        for _ in range(count):
            result = _get_result(pgconn, socket)
            if result is None:
                raise psycopg.OperationalError("the connection was lost")
            results.append(result)
            if _get_result(pgconn, socket) is not None:
                raise psycopg.OperationalError("unexpected results from the server")
        sync = _get_result(pgconn, socket)
        if sync is None or sync.status != _PIPELINE_SYNC:
            if sync is not None and sync.status == _FATAL_ERROR:
                raise _result_error(conn, sync)
            raise psycopg.OperationalError("the connection was lost")
        pgconn.exit_pipeline_mode()
    except BaseException:
        # Half-way through a pipeline the connection's state is unknown: drop it.
        pgconn.finish()
        raise
    return results


def _get_result(pgconn: pq.abc.PGconn, socket: int) -> pq.abc.PGresult | None:
    """``pgconn.get_result()`` once it would not block, waiting for the server in ``select``.

    psycopg's C implementation calls ``PQgetResult`` holding the GIL: called while the server is
    still working, it blocks every other thread of the process for the whole round trip, so the
    claim loops of one worker took turns instead of waiting for the server together.
    """
    while pgconn.is_busy():
        _wait_readable(socket)  # releases the GIL
        pgconn.consume_input()
    return pgconn.get_result()


def _wait_readable(fd: int) -> None:
    """Block until ``fd`` is readable."""
    _wait_fds((fd,), None)


def _wait_fds(fds: Sequence[int], timeout: float | None, *, write: bool = False) -> list[int]:
    """The ``fds`` that are readable (writable with ``write``) within ``timeout`` seconds (None: no limit).

    poll() where there is one: select() refuses file descriptors past 1023, which a process with
    many open files (or connections) hands out.
    """
    if _HAS_POLL:
        poller = select.poll()
        mask = select.POLLOUT if write else select.POLLIN
        for fd in fds:
            poller.register(fd, mask)
        events = poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        return [fd for fd, _ in events]
    if write:  # pragma: no cover - Windows
        return select.select([], list(fds), [], timeout)[1]
    return select.select(list(fds), [], [], timeout)[0]  # pragma: no cover - Windows


_HAS_POLL = hasattr(select, "poll")


def _load_row(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> tuple[Any, ...] | None:
    """The first row of ``result`` as psycopg would load it, or None."""
    if result.ntuples == 0:
        return None
    # One transformer per connection: it keeps the loaders it looked up (a claim's row always has
    # the same column types), which a new one per row would look up again (~4 us a claim).
    transformer = getattr(conn, "_neoq_transformer", None)
    if transformer is None:
        transformer = Transformer.from_context(conn)
        conn._neoq_transformer = transformer  # type: ignore[attr-defined]
    transformer.set_pgresult(result)
    return transformer.load_row(0, tuple)


def _wire_text(value: object) -> bytes | None:
    """A settle parameter in PostgreSQL's text format (``None`` is SQL NULL)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()
