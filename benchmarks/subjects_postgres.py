"""PostgreSQL subjects: neoq on postgresql://, and the minimal hand-written psycopg loops.

Each subject gets a database of its own (``harness.fresh_database``); rounds empty its tables.
Commits are durable everywhere (the server's ``synchronous_commit``, on by default).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from .harness import CONCURRENCY, IDLE_BEFORE_PICKUP, QUEUE, Countdown, Latencies, paced
from .subjects_memory import TIMEOUT, NeoqMemory


def _truncate_tables(dsn: str, prefix: str, keep: tuple[str, ...] = ()) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
                (prefix + "%",),
            )
            if row[0] not in keep
        ]
        if names:
            conn.execute("TRUNCATE " + ", ".join(f'"{name}"' for name in names) + " RESTART IDENTITY CASCADE")
        conn.execute("VACUUM ANALYZE")


class NeoqPostgres(NeoqMemory):
    """neoq on its PostgreSQL backend, default settings (transaction per job, durable commits)."""

    label = "neoq postgres"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self._dsn = dsn

    def reset(self) -> None:
        # Empty the tables while no client is open (a starting client's connections take locks
        # on them, and TRUNCATE could deadlock with that), then open a new client; the first one
        # finds no tables and creates the schema.
        self.close()
        _truncate_tables(self._dsn, "neoq_", keep=("neoq_migrations",))
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


_TABLE = """
DROP TABLE IF EXISTS bench_jobs;
CREATE TABLE bench_jobs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      text NOT NULL,
    payload    json NOT NULL,
    status     text NOT NULL DEFAULT 'new',
    run_after  timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bench_jobs_due ON bench_jobs (queue, run_after, id) WHERE status = 'new';
DROP TABLE IF EXISTS bench_unique_jobs;
CREATE TABLE bench_unique_jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       text NOT NULL,
    fingerprint text NOT NULL,
    payload     json NOT NULL,
    status      text NOT NULL DEFAULT 'new',
    run_after   timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bench_unique_jobs_due ON bench_unique_jobs (queue, run_after, id) WHERE status = 'new';
CREATE UNIQUE INDEX bench_unique_jobs_fingerprint ON bench_unique_jobs (queue, fingerprint) WHERE status = 'new';
"""


def _fingerprint(payload: str) -> str:
    """A SHA-256 hex digest of the queue and the payload's text, as uniqueness by payload needs."""
    return hashlib.sha256(f"{QUEUE}\x00{payload}".encode()).hexdigest()

_CLAIM = (
    "SELECT id, payload FROM bench_jobs WHERE queue = %s AND status = 'new' AND run_after <= now() "
    "ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT 1"
)
_DONE = "UPDATE bench_jobs SET status = 'processed' WHERE id = %s"


class MinPostgres:
    """The floor: plain psycopg 3 statements on a table shaped like a job queue's."""

    label = "min psycopg"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _connect(self, autocommit: bool = True) -> Any:
        import psycopg

        return psycopg.connect(self._dsn, autocommit=autocommit)

    def reset(self) -> None:
        with self._connect() as conn:
            conn.execute(_TABLE)

    def close(self) -> None:
        pass

    def enqueue(self, n: int) -> float:
        """One durable single-row INSERT ... RETURNING id per job (autocommit)."""
        with self._connect() as conn:
            start = time.perf_counter()
            for i in range(n):
                conn.execute(
                    "INSERT INTO bench_jobs (queue, payload) VALUES (%s, %s) RETURNING id",
                    (QUEUE, json.dumps({"i": i})),
                ).fetchone()
            return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        """Multi-row INSERT ... RETURNING id, 1,000 rows a statement, one transaction."""
        with self._connect(autocommit=False) as conn:
            start = time.perf_counter()
            with conn.cursor() as cur:
                for first in range(0, n, 1000):
                    rows = range(first, min(n, first + 1000))
                    values = ", ".join(["(%s, %s)"] * len(rows))
                    params: list[Any] = []
                    for i in rows:
                        params += (QUEUE, json.dumps({"i": i}))
                    cur.execute(f"INSERT INTO bench_jobs (queue, payload) VALUES {values} RETURNING id", params)
                    cur.fetchall()
            conn.commit()
            return time.perf_counter() - start

    def enqueue_copy(self, n: int) -> float:
        """COPY FROM STDIN in one transaction (no ids come back)."""
        with self._connect(autocommit=False) as conn:
            start = time.perf_counter()
            with conn.cursor() as cur, cur.copy("COPY bench_jobs (queue, payload) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((QUEUE, json.dumps({"i": i})))
            conn.commit()
            return time.perf_counter() - start

    def enqueue_unique(self, n: int) -> float:
        """``enqueue`` into a table that also refuses a second waiting job with the same payload: a
        fingerprint column under a unique index (a reference row for neoq's uniqueness, no target)."""
        with self._connect() as conn:
            start = time.perf_counter()
            for i in range(n):
                payload = json.dumps({"i": i})
                conn.execute(
                    "INSERT INTO bench_unique_jobs (queue, fingerprint, payload) VALUES (%s, %s, %s) RETURNING id",
                    (QUEUE, _fingerprint(payload), payload),
                ).fetchone()
            return time.perf_counter() - start

    def enqueue_copy_unique(self, n: int) -> float:
        """``enqueue_copy`` into the table of ``enqueue_unique`` (a reference row, no target)."""
        with self._connect(autocommit=False) as conn:
            start = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy("COPY bench_unique_jobs (queue, fingerprint, payload) FROM STDIN") as copy,
            ):
                for i in range(n):
                    payload = json.dumps({"i": i})
                    copy.write_row((QUEUE, _fingerprint(payload), payload))
            conn.commit()
            return time.perf_counter() - start

    def process(self, n: int) -> float:
        """10 threads, each: BEGIN / SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1 / UPDATE / COMMIT."""
        self.enqueue_copy(n)
        done = Countdown(n)
        connections = [self._connect(autocommit=False) for _ in range(CONCURRENCY)]

        def loop(conn: Any) -> None:
            while True:
                row = conn.execute(_CLAIM, (QUEUE,)).fetchone()  # psycopg sends BEGIN first
                if row is None:
                    conn.rollback()
                    return
                done.tick()  # the no-op handler
                conn.execute(_DONE, (row[0],))
                conn.commit()

        return self._time_loops(loop, connections, done)

    @staticmethod
    def _time_loops(loop: Any, connections: list[Any], done: Countdown) -> float:
        """Run ``loop(conn)`` in one thread per connection; return the seconds until all returned."""
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

    def pickup(self, n: int, rate: float) -> list[float]:
        """One LISTEN connection; on each notification the worker claims, runs and commits."""
        latencies = Latencies(n)
        stop = threading.Event()
        listener = self._connect()
        listener.execute("LISTEN bench_jobs")
        worker = self._connect(autocommit=False)

        def listen() -> None:
            while not stop.is_set():
                for _ in listener.notifies(timeout=0.2, stop_after=1):
                    while True:  # drain: every due job, then wait again
                        row = worker.execute(_CLAIM, (QUEUE,)).fetchone()
                        if row is None:
                            worker.rollback()
                            break
                        latencies.record(row[1]["t"])
                        worker.execute(_DONE, (row[0],))
                        worker.commit()

        thread = threading.Thread(target=listen)
        thread.start()
        time.sleep(IDLE_BEFORE_PICKUP)
        with self._connect() as producer:
            for i in paced(n, rate):
                producer.execute(
                    "WITH job AS (INSERT INTO bench_jobs (queue, payload) VALUES (%s, %s) RETURNING id) "
                    "SELECT pg_notify('bench_jobs', id::text) FROM job",
                    (QUEUE, json.dumps({"i": i, "t": time.perf_counter()})),
                )
        try:
            return latencies.wait(TIMEOUT)
        finally:
            stop.set()
            thread.join()
            listener.close()
            worker.close()
