"""The PostgreSQL backend's connections: connecting, the pools of one ``open()``, short autocommit
work on the aux pool (and the connection a single enqueue keeps), the schema, and driver errors
worded for the user without the URL's password."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import BackendConnectionError, BackendError, NeoqError
from . import forking
from .common import Conn, _close_quietly, _is_connection_error, _utc_session
from .migrations import migrate, missing_migrations
from .settings import Settings
from .state import _Pools
from .wire import _AUX_STATEMENTS, _IDLE, _WORK_STATEMENTS, _prepare

#: Connections of the pool for short autocommit work (enqueue, inspection).
_AUX_POOL_MAX = 4

#: While the aux pool has no connection to give, ask the server directly this often (seconds).
_AUX_PROBE_EVERY = 0.25

#: How long a single ``enqueue`` keeps the aux connection it used for the next one, instead of
#: returning it to the pool (seconds): see ``_Pools.spare``.
_SPARE_FOR = 1.0

#: How long the pools keep re-trying one lost connection on their own. psycopg_pool doubles the
#: delay between attempts (1, 2, 4, ... s) up to this, so with its default (5 minutes) a pool
#: refills only at its next attempt, long after the server is back; giving up soon hands
#: reconnection back to demand: the next getconn that has to wait grows the pool at once.
_POOL_RECONNECT_TIMEOUT = 3.0


class Connections:
    """Connections to one database, as ``settings`` say.

    ``require`` returns the pools of the current ``open()`` (raising when there are none);
    ``barrier`` runs before aux work, so it reads what this client wrote (the lease mode's batched
    outcomes).
    """

    def __init__(self, settings: Settings, *, require: Callable[[], _Pools], barrier: Callable[[], None]) -> None:
        self.settings = settings
        self._require = require
        self._barrier = barrier
        #: Set when a connection error was seen, cleared by the next aux work that succeeds.
        self.unreachable = False

    def connect(self, kwargs: dict[str, Any]) -> Conn:
        """A connection of this process's own, its session in UTC."""
        settings = self.settings
        try:
            conn = psycopg.connect(settings.url, row_factory=tuple_row, **kwargs)
        except psycopg.Error as exc:
            self.unreachable = True
            raise BackendConnectionError(
                f"cannot connect to PostgreSQL at {settings.safe_url}: {settings.scrub(str(exc).strip())}"
            ) from exc
        forking.track(conn)
        try:
            _utc_session(conn)
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise self.wrap(exc, "setting the session's TimeZone to UTC") from exc
        return conn

    def wrap(self, exc: BaseException, doing: str) -> BackendError:
        """The error to raise for the driver's ``exc``, met while ``doing``."""
        settings = self.settings
        message = settings.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if _is_connection_error(exc):
            self.unreachable = True
            return BackendConnectionError(f"PostgreSQL at {settings.safe_url} failed while {doing}: {message}")
        return BackendError(f"PostgreSQL failed while {doing}: {message}")

    def open_pools(self, work_max: int) -> tuple[ConnectionPool[Conn], ConnectionPool[Conn]]:
        """The worker pool (claims' transactions) and the aux pool (short autocommit work), opening."""
        settings = self.settings
        work = self._pool("neoq-work", settings.work_kwargs, settings.pool_min, work_max, _WORK_STATEMENTS)
        return work, self._pool("neoq-aux", settings.aux_kwargs, 1, _AUX_POOL_MAX, _AUX_STATEMENTS)

    def _pool(
        self, name: str, kwargs: dict[str, Any], min_size: int, max_size: int, statements: Sequence[str]
    ) -> ConnectionPool[Conn]:
        """A pool that opens in the background; its connections prepare ``statements``, if prepared."""
        settings = self.settings
        pool: ConnectionPool[Conn] = ConnectionPool(
            settings.url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=settings.connect_timeout,
            reconnect_timeout=_POOL_RECONNECT_TIMEOUT,
            name=name,
            configure=functools.partial(_configure, statements if settings.hot.prepared else ()),
        )
        pool.open(wait=False)
        return pool

    # -- the schema ------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """``PostgresBackend.migrate``, on a connection of its own."""
        conn = self.connect(self.settings.listen_kwargs)
        try:
            return self.migrate_on(conn)
        except psycopg.Error as exc:
            raise self.wrap(exc, "migrating the neoq schema") from exc
        finally:
            conn.close()

    def missing_migrations(self) -> list[int]:
        """``PostgresBackend.missing_migrations``, on a connection of its own."""
        conn = self.connect(self.settings.listen_kwargs)
        try:
            return missing_migrations(conn)
        except psycopg.Error as exc:
            raise self.wrap(exc, "reading the neoq schema version") from exc
        finally:
            conn.close()

    def migrate_on(self, conn: Conn) -> list[int]:
        try:
            return migrate(conn)
        except pg_errors.InsufficientPrivilege as exc:
            # A role meant to run workers only (docs/postgres.md: the worker role) on a schema
            # that is missing or older than this neoq.
            raise BackendError(
                f"the neoq schema needs migrations {', '.join(map(str, missing_migrations(conn)))}, and this role "
                f"may not apply them ({self.settings.scrub(str(exc).strip().splitlines()[0])}): run `neoq migrate` "
                "with a role that may create tables in the schema, then start again"
            ) from exc

    # -- short work ------------------------------------------------------------------------

    @contextmanager
    def aux(self, doing: str) -> Iterator[Conn]:
        """An autocommit connection for short work; driver errors leave it wrapped."""
        pool = self._require().aux
        self._barrier()
        try:
            conn = self.aux_getconn(pool)
            try:
                yield conn
            finally:
                pool.putconn(conn)
            self.unreachable = False
        except (PoolTimeout, psycopg.Error) as exc:
            raise self.aux_error(exc, doing) from exc

    def aux_error(self, exc: PoolTimeout | psycopg.Error, doing: str) -> NeoqError:
        """The error to raise for ``exc``, met while ``doing`` aux work."""
        if isinstance(exc, PoolTimeout):
            self.unreachable = True
            settings = self.settings
            return BackendConnectionError(
                f"no PostgreSQL connection to {settings.safe_url} within {settings.connect_timeout:g}s while {doing}"
            )
        return self.wrap(exc, doing)

    def aux_getconn(self, pool: ConnectionPool[Conn]) -> Conn:
        """A pooled connection within the connect timeout; an outage is reported at once.

        While the pool has no connection to give (busy, or refilling after an outage), the server
        is asked directly every ``_AUX_PROBE_EVERY`` seconds, and at once after a connection error:
        a server that refuses connections raises ``BackendConnectionError`` in milliseconds, where
        the pool alone would wait out the whole connect timeout.
        """
        end = time.monotonic() + self.settings.connect_timeout
        aux_kwargs = self.settings.aux_kwargs
        while True:
            if self.unreachable and not pool.get_stats().get("pool_available"):
                self.connect(aux_kwargs).close()
            try:
                return pool.getconn(timeout=max(0.001, min(end - time.monotonic(), _AUX_PROBE_EVERY)))
            except PoolTimeout:
                if time.monotonic() >= end:
                    raise
            self.connect(aux_kwargs).close()

    def checkout(self, pools: _Pools) -> tuple[Conn, float]:
        """An aux connection for a single enqueue and when it goes back to the pool: the kept one
        (``_Pools.spare``) while its time lasts, else one from the pool."""
        try:
            conn, until = pools.spare.pop()
        except IndexError:
            pass
        else:
            if time.monotonic() < until:
                return conn, until
            pools.aux.putconn(conn)  # kept long enough: the pool sees it again (and may retire it)
        return self.aux_getconn(pools.aux), time.monotonic() + _SPARE_FOR

    def keep_spare(self, pools: _Pools, conn: Conn, until: float) -> None:
        """Keep ``conn`` as the spare of ``pools``, or give it back to the pool: when it is not
        idle (closed, or a statement failed mid-transaction), when another is kept already, or
        when its time is up (so the pool still sees every connection now and then)."""
        spare = pools.spare
        if spare or conn.pgconn.transaction_status != _IDLE or time.monotonic() >= until:
            pools.aux.putconn(conn)
            return
        spare.append((conn, until))
        if pools.closed:  # closed meanwhile: close() may have looked already
            pools.drop_spare()
        elif len(spare) > 1:  # another enqueue kept one at the same moment: keep one
            try:
                extra, _ = spare.pop()
            except IndexError:
                return
            pools.aux.putconn(extra)


def _configure(statements: Sequence[str], conn: Conn) -> None:
    """A pool's configure hook: the connection is this process's (``forking``), its session is in
    UTC; prepare ``statements`` (the worker pool's claim and settle, the short-work pool's one-job
    enqueue)."""
    forking.track(conn)
    _utc_session(conn)
    if statements:
        _prepare(conn, statements)
