"""Short transactions on the pool's connections: how every call outside a claim runs; multi-statement results read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pymysql

from ...errors import BackendConnectionError, NeoqError
from .pools import Conn, Pool, wrap
from .settings import MySQLSettings

__all__ = ["Cursor", "Runner", "probe", "row_of", "skip"]

T = TypeVar("T")
Cursor = pymysql.cursors.Cursor


class Runner:
    """Runs ``work(cursor)`` in one transaction on a connection of ``pool``, driver errors wrapped."""

    def __init__(self, settings: MySQLSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool

    def run(self, doing: str, work: Callable[[Cursor], T], *, write: bool = True) -> T:
        """``work`` in a transaction (committed, or rolled back on any error); ``write=False``: autocommit reads."""
        conn = self.pool.get()
        broken = False
        try:
            return self.on(conn, doing, work, write=write)
        except BackendConnectionError:
            broken = True
            raise
        finally:
            self.pool.put(conn, broken=broken)

    def on(self, conn: Conn, doing: str, work: Callable[[Cursor], T], *, write: bool = True) -> T:
        """``work`` on ``conn`` (autocommit), in a transaction when ``write``."""
        try:
            if write:
                conn.begin()
            try:
                with conn.cursor() as cur:
                    result = work(cur)
                if write:
                    conn.commit()
                return result
            except BaseException:
                if write:
                    _rollback(conn)
                raise
        except NeoqError:
            raise
        except (pymysql.err.MySQLError, OSError) as exc:
            raise wrap(self.settings, exc, doing) from exc


def probe(cur: Cursor, queue: str) -> tuple[bool, float | None]:
    """Whether a job of ``queue`` is due, and in how many seconds the next one not yet due comes due.

    A paused queue (flow.py) has nothing due and nothing scheduled: its loops wait for the resume."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM neoq_jobs WHERE queue = %s AND status = 'new' AND run_after <= UTC_TIMESTAMP(6)),"
        " TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), (SELECT MIN(run_after) FROM neoq_jobs"
        " WHERE queue = %s AND status = 'new' AND run_after > UTC_TIMESTAMP(6))),"
        " EXISTS (SELECT 1 FROM neoq_queue_pauses WHERE queue = %s)",
        (queue, queue, queue),
    )
    row = cur.fetchone()
    if row is None or row[2]:
        return False, None
    due_in = None if row[1] is None else max(0.0, int(row[1]) / 1e6)
    return bool(row[0]), due_in


#: PyMySQL's reading of one packet (an error packet raises): an OK result read without parsing it.
_READ_PACKET: Callable[[Conn], object] | None = getattr(pymysql.connections.Connection, "_read_packet", None)


def skip(conn: Conn, results: int) -> None:
    """Read past the results of ``results`` statements of a multi-statement text, each an OK packet
    (an error packet raises), without parsing them: none is the text's last result, whose status
    the connection keeps (``next_result``)."""
    for _ in range(results):
        if _READ_PACKET is None:
            conn.next_result()
        else:
            _READ_PACKET(conn)


def row_of(conn: Conn, text: str, before: int, after: int) -> Any:
    """Run ``text``: ``before`` statements, a SELECT of one row at most, then ``after`` statements;
    return the SELECT's row (None: no row). Only the SELECT's result and the last are parsed."""
    conn.query(text)  # the first statement's result
    skip(conn, before - 1)
    conn.next_result()
    rows = getattr(conn, "_result").rows  # noqa: B009 - PyMySQL's result of the statement just read
    skip(conn, after - 1)
    conn.next_result()
    return rows[0] if rows else None


def _rollback(conn: Conn) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection is gone: the server rolled back already
        pass
