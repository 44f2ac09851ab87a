"""MySQL/MariaDB subjects: neoq on mysql:// in both modes, and the minimal hand-written PyMySQL loops.

Each subject gets a database of its own (``fresh_database``: ``NEOQ_BENCH_MYSQL_URL``, default
``mysql://root@127.0.0.1:3306/``); rounds empty its tables. Commits are durable (the server's
``innodb_flush_log_at_trx_commit``, 1 by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .harness import CONCURRENCY, QUEUE, Countdown
from .subjects_memory import TIMEOUT, NeoqMemory

_SERVER = os.environ.get("NEOQ_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


def _connect(url: str, *, autocommit: bool = True) -> Any:
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
        charset="utf8mb4",
        autocommit=autocommit,
    )


@contextlib.contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """Create a database of its own for one subject; drop it afterwards. Yields its URL."""
    name = f"neoq_bench_{label.replace('-', '_')}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _connect(_SERVER)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        admin.close()
    parts = urlsplit(_SERVER)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    finally:
        admin = _connect(_SERVER)
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


def _empty_tables(url: str, prefix: str) -> None:
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_NAME LIKE %s AND TABLE_NAME <> 'neoq_migrations'",
                (prefix + "%",),
            )
            for (name,) in cur.fetchall():
                cur.execute(f"TRUNCATE TABLE `{name}`")
    finally:
        conn.close()


class NeoqMySQL(NeoqMemory):
    """neoq on its MySQL backend in lease mode (the default)."""

    label = "neoq mysql"
    mode = "lease"

    def __init__(self, url: str) -> None:
        super().__init__(url, mode=self.mode)

    def reset(self) -> None:
        self.close()
        _empty_tables(self._url, "neoq_")
        super().reset()

    def wait_all_done(self, done: Countdown, n: int) -> float:
        # The last handler returned; the job is done once its PROCESSED status is committed.
        done.wait(TIMEOUT)
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            if self._client.stats().get(QUEUE, {}).get("processed", 0) >= n:
                return time.perf_counter()
            time.sleep(0.002)
        raise TimeoutError("jobs ran but were not all recorded as processed")


class NeoqMySQLTransaction(NeoqMySQL):
    """neoq on its MySQL backend in transaction mode (a row lock held per running job)."""

    label = "neoq mysql (transaction mode)"
    mode = "transaction"


_TABLE = (
    "DROP TABLE IF EXISTS bench_jobs",
    "CREATE TABLE bench_jobs (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " queue VARBINARY(512) NOT NULL, payload LONGTEXT NOT NULL,"
    " status VARCHAR(16) NOT NULL DEFAULT 'new', run_after DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),"
    " created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6), KEY bench_jobs_due (queue, status, run_after, id))"
    " ENGINE = InnoDB",
)
_CLAIM = (
    "SELECT id, payload FROM bench_jobs WHERE queue = %s AND status = 'new' AND run_after <= UTC_TIMESTAMP(6)"
    " ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_DONE = "UPDATE bench_jobs SET status = 'processed' WHERE id = %s"


class MinMySQL:
    """The floor: plain PyMySQL statements on a table shaped like a job queue's."""

    label = "min pymysql"

    def __init__(self, url: str) -> None:
        self._url = url

    def reset(self) -> None:
        conn = _connect(self._url)
        try:
            with conn.cursor() as cur:
                for statement in _TABLE:
                    cur.execute(statement)
        finally:
            conn.close()

    def close(self) -> None:
        pass

    def enqueue(self, n: int) -> float:
        """One durable single-row INSERT per job (autocommit), its id read."""
        conn = _connect(self._url)
        try:
            with conn.cursor() as cur:
                start = time.perf_counter()
                for i in range(n):
                    cur.execute(
                        "INSERT INTO bench_jobs (queue, payload) VALUES (%s, %s)", (QUEUE, json.dumps({"i": i}))
                    )
                    _ = cur.lastrowid
                return time.perf_counter() - start
        finally:
            conn.close()

    def enqueue_many(self, n: int) -> float:
        """Multi-row INSERT, 1,000 rows a statement, one transaction."""
        conn = _connect(self._url, autocommit=False)
        try:
            start = time.perf_counter()
            with conn.cursor() as cur:
                for first in range(0, n, 1000):
                    rows = range(first, min(n, first + 1000))
                    params: list[Any] = []
                    for i in rows:
                        params += (QUEUE, json.dumps({"i": i}))
                    cur.execute(
                        "INSERT INTO bench_jobs (queue, payload) VALUES " + ", ".join(["(%s, %s)"] * len(rows)), params
                    )
            conn.commit()
            return time.perf_counter() - start
        finally:
            conn.close()

    def process(self, n: int) -> float:
        """10 threads, each: SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1 / UPDATE / COMMIT."""
        self.enqueue_many(n)
        done = Countdown(n)
        connections = [_connect(self._url, autocommit=False) for _ in range(CONCURRENCY)]

        def loop(conn: Any) -> None:
            with conn.cursor() as cur:
                while True:
                    cur.execute(_CLAIM, (QUEUE,))
                    row = cur.fetchone()
                    if row is None:
                        conn.rollback()
                        return
                    done.tick()  # the no-op handler
                    cur.execute(_DONE, (row[0],))
                    conn.commit()

        threads = [threading.Thread(target=loop, args=(conn,)) for conn in connections]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished = time.perf_counter()
        for conn in connections:
            conn.close()
        if not done.done.is_set():
            raise RuntimeError("the minimal loop stopped before every job was processed")
        return finished - start
