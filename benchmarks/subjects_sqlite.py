"""SQLite subjects: neoq on ``sqlite://``, huey's ``SqliteHuey``, and the minimal SQLite loop (the floor),
plus that loop with the outcome as a second write (``min-sqlite-settle``, shown beside it, no target).

Each round works on a new database file in a temporary folder of its own (removed at ``close``),
in WAL mode. neoq keeps its default ``synchronous=normal``; huey its default (``fsync`` off); the
floor uses ``synchronous=NORMAL`` like neoq. Nothing else runs on the file while it is measured.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .harness import CONCURRENCY, Countdown
from .subjects_memory import TIMEOUT, HueyMemory, NeoqMemory


class _TempFile:
    """A new database path per round, in a folder removed at ``close``."""

    _folder: str | None = None

    def _fresh_path(self, name: str) -> str:
        self._remove()
        self._folder = tempfile.mkdtemp(prefix="neoq-bench-sqlite-")
        return str(Path(self._folder) / name)

    def _remove(self) -> None:
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


class NeoqSqlite(_TempFile, NeoqMemory):
    """neoq on ``sqlite://`` (a ``SqliteBackend`` object: found the same way in any virtualenv)."""

    label = "neoq sqlite"

    def __init__(self) -> None:
        super().__init__()

    def reset(self) -> None:
        from neoq.backends.sqlite import SqliteBackend

        self.close()
        backend = SqliteBackend(self._fresh_path("neoq.db"))
        self._client = self._neoq.new(backend=backend, retention_processed=None, retention_failed=None)

    def close(self) -> None:
        super().close()
        self._remove()


class HueySqlite(_TempFile, HueyMemory):
    """huey 3 with its SQLite storage (``SqliteHuey``) and a consumer of 10 worker threads; results off."""

    label = "huey SqliteHuey"
    _consumer: Any = None

    def reset(self) -> None:
        from huey import SqliteHuey

        self.close()
        self._huey = SqliteHuey("bench", filename=self._fresh_path("huey.db"), results=False, utc=True)
        self._handle: Any = lambda i, t: None

        @self._huey.task(name="noop")
        def noop(i: int, t: float | None = None) -> None:
            self._handle(i, t)

        self._task = noop
        self._consumer: Any = None

    def close(self) -> None:
        super().close()
        self._remove()


class MinSqlite(_TempFile):
    """The floor: a jobs table; enqueue is one single-row INSERT per job (autocommit); processing is
    10 threads, each with its own connection, claiming one job per ``BEGIN IMMEDIATE`` transaction."""

    label = "min sqlite"

    def reset(self) -> None:
        self._path = self._fresh_path("min.db")
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'new')"
        )
        conn.execute("CREATE INDEX jobs_new ON jobs (queue, id) WHERE status = 'new'")
        conn.close()

    def close(self) -> None:
        self._remove()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def enqueue(self, n: int) -> float:
        conn = self._connect()
        execute = conn.execute
        start = time.perf_counter()
        for i in range(n):
            execute("INSERT INTO jobs (queue, payload) VALUES (?, ?)", ("bench", f'{{"i": {i}}}'))
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed

    def process(self, n: int) -> float:
        conn = self._connect()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO jobs (queue, payload) VALUES (?, ?)", [("bench", f'{{"i": {i}}}') for i in range(n)]
        )
        conn.execute("COMMIT")
        conn.close()
        done = Countdown(n)

        def work() -> None:
            conn = self._connect()
            try:
                while self._one(conn):
                    done.tick()
            finally:
                conn.close()

        start = time.perf_counter()
        threads = [threading.Thread(target=work, daemon=True) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        finished = done.wait(TIMEOUT)
        for thread in threads:
            thread.join()
        return finished - start


    def _one(self, conn: sqlite3.Connection) -> bool:
        """Claim the next job and mark it done in one ``BEGIN IMMEDIATE`` transaction; False when none is left."""
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "UPDATE jobs SET status = 'done' WHERE id = (SELECT id FROM jobs WHERE queue = 'bench'"
            " AND status = 'new' ORDER BY id LIMIT 1) RETURNING id, payload"
        ).fetchone()
        conn.execute("COMMIT")
        return row is not None


class MinSqliteSettle(MinSqlite):
    """Not a floor the targets use: the same loop with the claim and the outcome as two writes, as an
    at-least-once queue needs them (a ``'running'`` claim in one ``BEGIN IMMEDIATE`` transaction, the job
    marked done in a second), still one job a transaction. Shows what the second write costs."""

    label = "min: 10 threads claim, then mark done (2 transactions a job)"

    def _one(self, conn: sqlite3.Connection) -> bool:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "UPDATE jobs SET status = 'running' WHERE id = (SELECT id FROM jobs WHERE queue = 'bench'"
            " AND status = 'new' ORDER BY id LIMIT 1) RETURNING id, payload"
        ).fetchone()
        conn.execute("COMMIT")
        if row is None:
            return False
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (row[0],))
        conn.execute("COMMIT")
        return True
