"""One client's connections to its SQLite file: a small pool, short write transactions, busy handling.

- **Writes** (``write``) run in ``BEGIN IMMEDIATE`` transactions, which take the file's write lock
  at once: a transaction never starts as a reader and fails to upgrade later. The threads of one
  client take turns on a lock of their own first, so they queue in Python instead of in SQLite's
  busy handler (which sleeps in growing steps); another process holding the lock is waited for by
  that handler (``PRAGMA busy_timeout``), then by a retry with backoff, up to ``busy_timeout`` in
  all. "database is locked" never reaches a user: past that time the error says what held it.
- **Reads** (``read``) run beside writers (WAL mode): one ``BEGIN`` (deferred) transaction sees
  one snapshot of the file.
- **The pool** keeps up to ``pool_size`` connections, made on demand; a thread waits for one when
  all are out. ``close`` closes every one of them; a forked child drops its parent's without
  touching them (SQLite connections must not cross a fork) and opens its own.
- **Errors**: every ``sqlite3.Error`` becomes a ``BackendError`` saying what failed and what to do
  (a full disk, a read-only file, a file that stayed locked).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from ...errors import BackendConnectionError, BackendError, NeoqError
from .settings import SqliteSettings

__all__ = ["Connections", "connect"]

#: Connections a forked child inherited: kept alive and never used or closed (closing a SQLite
#: connection across a fork may checkpoint or unlock on the parent's behalf).
_abandoned: list[object] = []

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The open pools of this process: ``os.fork()`` waits for their write transactions and checkpoints
#: to end (``_before_fork``). SQLite keeps a file's locks in the process's memory as well as in the
#: file: a child forked in the middle of one would inherit "this process holds the WAL write lock",
#: which no thread of its own ever releases, and its writes would wait out ``busy_timeout``.
_pools: weakref.WeakSet[Connections] = weakref.WeakSet()
_held_at_fork: list[threading.Lock] = []

#: SQLite's own wait for a lock inside one statement (ms): the retry loop waits beyond it.
_STATEMENT_BUSY_MS = 2000

#: About how much a client writes between two WAL checkpoints: each write transaction counts one,
#: plus one for each 20 rows it writes. 170 single enqueues write about 1000 pages, SQLite's own
#: default (a smaller WAL costs fewer instructions a write; each checkpoint costs an fsync or two).
_CHECKPOINT_EVERY = 170

#: SQLite error names (Python 3.11+) and message fragments that mean "someone else holds the lock".
_BUSY_NAMES = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY"})


def connect(settings: SqliteSettings, *, read_only: bool = False) -> sqlite3.Connection:
    """A new connection to the file, in autocommit mode (neoq says BEGIN itself), tuned for neoq."""
    path = settings.path
    if read_only:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=2.0
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=2.0, cached_statements=128)
    conn.execute(f"PRAGMA busy_timeout = {_STATEMENT_BUSY_MS}")
    if not read_only:
        conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
        # Checkpoints are the pool's (Connections.checkpoint), made outside the client's write lock.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def is_busy(exc: BaseException) -> bool:
    """Whether a SQLite error means the file was locked by another connection (retry it)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name in _BUSY_NAMES:
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def describe(exc: BaseException, path: str, doing: str) -> BackendError:
    """The ``BackendError`` for a SQLite error: what failed, on which file, and what to do."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    lower = text.lower()
    if name == "SQLITE_FULL" or "disk is full" in lower:
        return BackendError(
            f"the disk holding the SQLite database {path!r} is full while {doing}: nothing was stored; free some space"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in lower or "read-only" in lower:
        return BackendError(
            f"the SQLite database {path!r} is read-only while {doing}: nothing was stored; make the file and its "
            "directory writable"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in lower:
        return BackendConnectionError(f"cannot open the SQLite database {path!r} while {doing}: {text}")
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in lower:
        return BackendError(f"the disk failed to read or write the SQLite database {path!r} while {doing}: {text}")
    if name == "SQLITE_CORRUPT" or "malformed" in lower or "not a database" in lower:
        return BackendError(f"{path!r} is not a usable SQLite database ({text}) while {doing}")
    return BackendError(f"SQLite failed while {doing} on {path!r}: {text}")


class Connections:
    """The pool of one open backend, and its write and read transactions."""

    def __init__(self, settings: SqliteSettings) -> None:
        self._settings = settings
        self._path = settings.path
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[sqlite3.Connection] = []
        self._open = 0
        self._closed = False
        self._pid = os.getpid()
        #: The threads of this client write one at a time (see the module docstring).
        self._write_lock = threading.Lock()
        #: Writes since the last WAL checkpoint (see ``checkpoint``; counted under the write lock).
        self._unchecked = 0
        self._checkpointing = False
        #: Held while a checkpoint runs (a fork waits for it, as for a write).
        self._checkpoint_lock = threading.Lock()
        _pools.add(self)

    def fork_locks(self) -> tuple[threading.Lock, threading.Lock]:
        """The locks a fork takes first, so that it never lands inside a write or a checkpoint."""
        return self._write_lock, self._checkpoint_lock

    # -- the pool --------------------------------------------------------------------------

    def after_fork(self) -> None:
        """Called in a forked child (before any other thread exists): forget the parent's connections."""
        if self._pid != os.getpid():
            self._forked()

    def _acquire(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self.after_fork()
        with self._cond:
            while True:
                if self._closed:
                    raise BackendError("the SQLite backend is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._settings.pool_size:
                    self._open += 1
                    break
                self._cond.wait()
        try:
            return connect(self._settings)
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _give(self, conn: sqlite3.Connection, *, broken: bool = False) -> None:
        with self._cond:
            if self._pid == os.getpid() and not self._closed and not broken:
                self._idle.append(conn)
                self._cond.notify()
                return
            self._open -= 1
            self._cond.notify()
            mine = self._pid == os.getpid()
        if mine:
            conn.close()

    def _forked(self) -> None:
        """In a forked child: the parent's connections are not ours to use or close."""
        _abandoned.append(self._idle)
        self._idle = []
        self._open = 0
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpointing = False  # a parent's thread may have been checkpointing at the fork

    def close(self) -> None:
        """Close the idle connections now, and each busy one as it comes back. Idempotent."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            mine = self._pid == os.getpid()
            self._cond.notify_all()
        if mine:
            for conn in idle:
                conn.close()

    @property
    def open_connections(self) -> int:
        """How many connections of the pool are open (tests check none is left after close)."""
        return self._open

    # -- transactions ----------------------------------------------------------------------

    def write(
        self, work: Callable[[sqlite3.Connection], T], doing: str, *, checkpoint: bool = True, rows: int = 1
    ) -> T:
        """Run ``work(conn)`` in one ``BEGIN IMMEDIATE`` transaction and commit; retry while the file is busy.

        ``work`` may run more than once (each time in a new transaction); a ``NeoqError`` it raises
        rolls back and propagates. Nothing is stored when this raises. Once enough was written since
        the last WAL checkpoint, this call makes one after its commit, outside the write lock (not
        with ``checkpoint=False``: a claim, which its loops wait for). ``rows``: about how many rows
        ``work`` writes (what the WAL grows by; ``conn.total_changes`` would cost more than the count).
        """
        deadline = time.monotonic() + self._settings.busy_timeout
        delay = 0.001
        while True:
            with self._write_lock:
                conn = None
                broken = False
                try:
                    conn = self._acquire()
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(conn)
                        conn.execute("COMMIT")
                        self._unchecked += 1 + rows // 20
                        break
                    except BaseException:
                        if conn.in_transaction:
                            try:
                                conn.execute("ROLLBACK")
                            except sqlite3.Error:
                                broken = True
                        raise
                except NeoqError:
                    raise
                except sqlite3.Error as exc:
                    if not is_busy(exc):
                        raise describe(exc, self._path, doing) from exc
                    if time.monotonic() >= deadline:
                        raise BackendError(
                            f"the SQLite database {self._path!r} stayed locked by another process for "
                            f"{self._settings.busy_timeout:g}s while {doing}; nothing was stored (raise busy_timeout, "
                            "or look for a process holding a long write transaction on it)"
                        ) from exc
                finally:
                    if conn is not None:
                        self._give(conn, broken=broken)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.1)
        if checkpoint and self._unchecked >= _CHECKPOINT_EVERY:
            self.checkpoint()
        return result

    def checkpoint(self) -> None:
        """Copy the WAL's pages into the database file (``PASSIVE``: it waits for no reader or writer).

        SQLite would do it inside the commit that fills the WAL (``wal_autocheckpoint``), holding
        this client's write lock for the copy and its fsync, milliseconds during which none of its
        threads could write. Errors are logged, never raised: the commit before it stands.
        """
        with self._cond:
            if self._checkpointing:
                return
            self._checkpointing = True
            self._unchecked = 0
        conn = None
        try:
            with self._checkpoint_lock:
                conn = self._acquire()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, NeoqError) as exc:
            logger.debug("neoq: a WAL checkpoint of %r failed: %s", self._path, exc)
        finally:
            if conn is not None:
                self._give(conn)
            self._checkpointing = False

    def read(self, work: Callable[[sqlite3.Connection], T], doing: str, *, single: bool = False) -> T:
        """Run ``work(conn)`` in one read transaction (one snapshot); retry while the file is busy.

        ``single``: ``work`` runs one statement, which is a snapshot of its own in autocommit mode,
        so no ``BEGIN``/``COMMIT`` is said around it (two fewer calls into SQLite).
        """
        deadline = time.monotonic() + self._settings.busy_timeout
        delay = 0.001
        while True:
            conn = None
            broken = False
            try:
                conn = self._acquire()
                if single:
                    return work(conn)
                conn.execute("BEGIN")
                try:
                    return work(conn)
                finally:
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.Error:
                        broken = True
            except NeoqError:
                raise
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise describe(exc, self._path, doing) from exc
                if time.monotonic() >= deadline:
                    raise BackendError(
                        f"the SQLite database {self._path!r} stayed locked for {self._settings.busy_timeout:g}s while "
                        f"{doing}"
                    ) from exc
            finally:
                if conn is not None:
                    self._give(conn, broken=broken)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.1)


def _before_fork() -> None:
    # A write holds its lock for one short transaction (a writer waiting for another process
    # gives it up between tries), so the fork waits milliseconds, at most a statement's busy wait.
    for pool in list(_pools):
        for lock in pool.fork_locks():
            lock.acquire()
            _held_at_fork.append(lock)


def _after_fork() -> None:
    # In the parent, the locks go back to its threads; in the child, the pools get new ones anyway.
    while _held_at_fork:
        _held_at_fork.pop().release()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
