"""Short transactions on the pool's connections: how every call outside a claim runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pymysql

from ...errors import BackendConnectionError, NeoqError
from .pools import Conn, Pool, wrap
from .settings import MySQLSettings

__all__ = ["Cursor", "Runner"]

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


def _rollback(conn: Conn) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection is gone: the server rolled back already
        pass
