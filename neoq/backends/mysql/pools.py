"""Connections to the server: made and configured here, lent by a small pool, and driver errors wrapped.

The common get() and put() take no lock (``collections.deque``'s pop and append are atomic);
the lock guards the count of connections, waiting for one, closing and forking.

Why a pool of our own: the pools on PyPI for DB-API drivers (DBUtils' ``PooledDB``, SQLAlchemy's
``QueuePool``) hand out wrappers around the connection and do not close the connections lent out
when the pool closes. neoq gives handlers the driver's own ``pymysql.Connection`` as
``job_context().transaction``, kills a timed-out attempt's connection by its server thread id, and
must leave no connection open after ``shutdown()``, so it keeps the connections itself: about
ninety lines, one lock.

Every connection's session is in UTC (``time_zone = '+00:00'``: DATETIME(6) values are UTC) and
READ COMMITTED, so that a transaction-mode claim, which holds its row lock while the handler runs,
blocks no enqueue and no other claim (InnoDB's REPEATABLE READ would take gap locks).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql

from ...errors import BackendConnectionError, BackendError
from .settings import MySQLSettings

__all__ = ["Pool", "connect", "wrap"]

Conn = pymysql.connections.Connection

#: Client error codes that mean the server cannot be reached or the connection is gone.
_UNREACHABLE = frozenset({2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927, 4031})


def wrap(settings: MySQLSettings, exc: BaseException, doing: str) -> BackendError:
    """A driver error as the ``BackendError`` neoq raises (``BackendConnectionError`` when unreachable)."""
    code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
    text = settings.scrub(
        str(exc.args[1]) if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) > 1 else str(exc)
    )
    if code in _UNREACHABLE or isinstance(exc, (OSError, pymysql.err.InterfaceError)):
        return BackendConnectionError(f"MySQL server {settings.safe_url} unreachable while {doing}: {text}")
    return BackendError(f"MySQL error while {doing} ({settings.safe_url}): {text}")


def connect(settings: MySQLSettings, *, autocommit: bool = True) -> Conn:
    """A new connection, its session in UTC and READ COMMITTED.

    A worker connection (``autocommit=False``) also takes several statements in one text: a claim
    sends its SELECT and SAVEPOINT, a settle its UPDATE and COMMIT, in one round trip each.
    """
    flags = 0 if autocommit else pymysql.constants.CLIENT.MULTI_STATEMENTS
    try:
        conn = pymysql.connect(**{**settings.connect_kwargs, "autocommit": autocommit, "client_flag": flags})
        try:
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        except BaseException:
            conn.close()
            raise
    except pymysql.err.MySQLError as exc:
        raise wrap(settings, exc, "connecting") from exc
    except OSError as exc:
        raise wrap(settings, exc, "connecting") from exc
    return conn


class Pool:
    """Up to ``max_size`` connections made by ``make``, lent one at a time. Thread-safe.

    ``close()`` closes the idle connections at once and each lent one when it comes back, so
    after a shutdown whose handlers returned no connection is left open. A forked child drops the
    parent's connections unclosed (their sockets are the parent's) and makes its own.
    """

    def __init__(self, make: Callable[[], Conn], max_size: int, timeout: float, name: str) -> None:
        self._make = make
        self._max = max_size
        self._timeout = timeout
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._idle: collections.deque[Conn] = collections.deque()
        self._count = 0
        self._closed = False
        self._pid = os.getpid()
        #: get() calls in their locked part (possibly waiting for a connection to come back).
        self._getting = 0

    def _forked(self) -> None:
        if self._pid != os.getpid():  # under the lock: the parent's connections are not ours
            self._idle.clear()
            self._count = 0
            self._pid = os.getpid()

    def get(self) -> Conn:
        """A connection: an idle one, a new one, or the next one given back (up to the timeout)."""
        if not self._closed and self._pid == os.getpid():
            try:
                return self._idle.pop()  # the common case, without the lock: deque.pop is atomic
            except IndexError:
                pass
        deadline = time.monotonic() + self._timeout
        with self._cond:
            # Counted before the idle ones are looked at: a put() without the lock that does not
            # see this count appended its connection before the look (see put).
            self._getting += 1
            try:
                while True:
                    self._forked()
                    if self._closed:
                        raise BackendError(f"the MySQL backend is closed ({self._name} pool)")
                    try:
                        return self._idle.pop()  # a get() without the lock may have taken the last one
                    except IndexError:
                        pass
                    if self._count < self._max:
                        self._count += 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BackendConnectionError(
                            f"no free MySQL connection in the {self._name} pool ({self._max}) within {self._timeout:g}s"
                        )
                    self._cond.wait(left)
            finally:
                self._getting -= 1
        try:
            return self._make()  # slow I/O outside the lock
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def put(self, conn: Conn, *, broken: bool = False) -> None:
        """Give ``conn`` back; a ``broken`` one (or any, once closed) is closed instead. Never raises."""
        if not broken and not self._closed and self._pid == os.getpid():
            # The common case, without the lock: deque.append is atomic.
            self._idle.append(conn)
            if self._closed:  # closed meanwhile: close() again takes what was appended after it
                self.close()
            elif self._getting:  # a get() may be waiting for a connection: wake it
                with self._cond:
                    self._cond.notify()
            return
        with self._cond:
            mine = self._pid == os.getpid()
            keep = mine and not broken and not self._closed
            if keep:
                self._idle.append(conn)
            elif mine:
                self._count -= 1
            self._cond.notify()
        if not keep and mine:
            _close(conn)

    def close(self) -> None:
        """Close the idle connections; the lent ones close when they come back. Idempotent."""
        with self._cond:
            self._forked()
            self._closed = True
            idle = []
            while True:  # one pop at a time: a get() that pops without the lock takes another one
                try:
                    idle.append(self._idle.pop())
                except IndexError:
                    break
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _close(conn)

    def after_fork(self) -> None:
        """In a forked child: a new lock (a parent thread may have held this one), none of the
        parent's connections (their sockets are the parent's sessions; they are dropped unclosed)."""
        self._cond = threading.Condition(threading.Lock())
        self._getting = 0  # the parent's threads that were getting did not come along
        self._forked()

    def grow(self, max_size: int) -> None:
        """Allow up to ``max_size`` connections (never fewer than now)."""
        with self._cond:
            if max_size > self._max:
                self._max = max_size
                self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # already gone: nothing to release
        pass
