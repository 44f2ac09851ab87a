"""The autocommit connections that commit attempt counters outside the claims' transactions."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from ...errors import BackendError
from .common import Conn, _close_quietly
from .wire import _COUNTER_STATEMENTS, _prepare


class _Counters:
    """Autocommit connections that commit attempt counters, kept in a stack and grown on demand.

    A counter write takes one round trip, so a few connections serve many worker threads; there
    are never more than the threads counting at the same moment. Cheaper per job than a pool.
    """

    def __init__(
        self, connect: Callable[[], Conn], prepared: bool, wrap: Callable[[BaseException, str], BackendError]
    ) -> None:
        #: Opens a counter connection; whether to prepare its statement; wraps a driver error.
        self._connect = connect
        self._prepared = prepared
        self._wrap = wrap
        self._idle: list[Conn] = []
        self._closed = False

    def get(self) -> Conn:
        try:
            return self._idle.pop()  # atomic; the most recently used connection first
        except IndexError:
            pass
        conn = self._connect()
        try:
            if self._prepared:
                _prepare(conn, _COUNTER_STATEMENTS)
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self._wrap(exc, "preparing the attempt counter") from exc
        return conn

    def put(self, conn: Conn) -> None:
        if self._closed or conn.closed:
            _close_quietly(conn)
            return
        self._idle.append(conn)
        if self._closed:
            self.close()

    def close(self) -> None:
        self._closed = True
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:
                break
            _close_quietly(conn)
