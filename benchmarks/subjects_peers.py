"""The PostgreSQL peers: procrastinate and pgqueuer, each used the way its documentation shows.

Both are asyncio libraries. Their handlers are ``async def`` no-ops (pgqueuer accepts nothing
else; for procrastinate it is its fastest path: a sync task would pay a thread hop per job), run
with 10 at a time. One-at-a-time enqueues use each library's single-job call, batches its batch
call. Everything else keeps the library's defaults (notably LISTEN/NOTIFY on, durable commits).
Installed only in the ``make bench-peers`` virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from .harness import CONCURRENCY, IDLE_BEFORE_PICKUP, QUEUE, Countdown, Latencies
from .subjects_memory import TIMEOUT
from .subjects_postgres import _truncate_tables


async def _paced(n: int, rate: float) -> Any:
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


async def _wait_event(event: Any, what: str) -> None:
    end = time.monotonic() + TIMEOUT
    while not event.is_set():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.001)


class Procrastinate:
    """procrastinate 3 with its psycopg connector; worker ``concurrency=10``."""

    label = "procrastinate"

    def __init__(self, dsn: str) -> None:
        import procrastinate

        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        self._dsn = dsn
        self._app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
        self._on_run: Any = lambda i, t: None

        @self._app.task(name="noop", queue=QUEUE)
        async def noop(i: int, t: float | None = None) -> None:
            self._on_run(i, t)

        self._task = noop
        with self._app.open():
            self._app.schema_manager.apply_schema()

    def reset(self) -> None:
        _truncate_tables(self._dsn, "procrastinate_", keep=("procrastinate_workers",))

    def close(self) -> None:
        pass

    def enqueue(self, n: int) -> float:
        with self._app.open():
            defer = self._task.defer
            start = time.perf_counter()
            for i in range(n):
                defer(i=i)
            return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        with self._app.open():
            start = time.perf_counter()
            self._task.batch_defer(*[{"i": i} for i in range(n)])
            return time.perf_counter() - start

    def _worker(self, wait: bool) -> Any:
        return self._app.run_worker_async(
            queues=[QUEUE], concurrency=CONCURRENCY, wait=wait, install_signal_handlers=False
        )

    def process(self, n: int) -> float:
        with self._app.open():
            self._task.batch_defer(*[{"i": i} for i in range(n)])
        done = Countdown(n)
        self._on_run = lambda i, t: done.tick()

        async def run() -> float:
            async with self._app.open_async():
                start = time.perf_counter()
                await self._worker(wait=False)  # returns once the queue is empty and jobs finished
                if not done.done.is_set():
                    raise RuntimeError("procrastinate's worker stopped before every job ran")
                return time.perf_counter() - start

        return asyncio.run(run())

    def pickup(self, n: int, rate: float) -> list[float]:
        latencies = Latencies(n)
        self._on_run = lambda i, t: latencies.record(t)

        async def run() -> list[float]:
            async with self._app.open_async():
                worker = asyncio.create_task(self._worker(wait=True))
                await asyncio.sleep(IDLE_BEFORE_PICKUP)
                async for i in _paced(n, rate):
                    await self._task.defer_async(i=i, t=time.perf_counter())
                await _wait_event(latencies.done, "procrastinate pickups")
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                return list(latencies.values)

        return asyncio.run(run())


class PgQueuer:
    """pgqueuer with asyncpg; ``QueueManager.run(batch_size=10)`` (its default)."""

    label = "pgqueuer"

    def __init__(self, dsn: str) -> None:
        logging.getLogger("pgqueuer").setLevel(logging.WARNING)
        self._dsn = dsn
        self._on_run: Any = lambda job: None

        async def install() -> None:
            async with self._queries() as queries:
                await queries.install()

        asyncio.run(install())

    @contextlib.asynccontextmanager
    async def _queries(self) -> Any:
        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        conn = await asyncpg.connect(self._dsn)
        try:
            yield Queries(AsyncpgDriver(conn))
        finally:
            await conn.close()

    def reset(self) -> None:
        _truncate_tables(self._dsn, "pgqueuer")

    def close(self) -> None:
        pass

    def enqueue(self, n: int) -> float:
        async def run() -> float:
            async with self._queries() as queries:
                enqueue = queries.enqueue
                start = time.perf_counter()
                for i in range(n):
                    await enqueue("noop", json.dumps({"i": i}).encode())
                return time.perf_counter() - start

        return asyncio.run(run())

    async def _enqueue_batch(self, n: int) -> float:
        async with self._queries() as queries:
            start = time.perf_counter()
            await queries.enqueue(["noop"] * n, [json.dumps({"i": i}).encode() for i in range(n)], [0] * n)
            return time.perf_counter() - start

    def enqueue_many(self, n: int) -> float:
        return asyncio.run(self._enqueue_batch(n))

    def _manager(self, conn: Any) -> Any:
        from pgqueuer import Queries, QueueManager
        from pgqueuer.db import AsyncpgDriver

        manager = QueueManager(Queries(AsyncpgDriver(conn)))

        @manager.entrypoint("noop")
        async def noop(job: Any) -> None:
            self._on_run(job)

        return manager

    def process(self, n: int) -> float:
        import asyncpg
        from pgqueuer.domain.types import QueueExecutionMode

        asyncio.run(self._enqueue_batch(n))
        done = Countdown(n)
        self._on_run = lambda job: done.tick()

        async def run() -> float:
            conn = await asyncpg.connect(self._dsn)
            try:
                manager = self._manager(conn)
                start = time.perf_counter()
                await manager.run(batch_size=CONCURRENCY, mode=QueueExecutionMode.drain)
                if not done.done.is_set():
                    raise RuntimeError("pgqueuer's drain stopped before every job ran")
                return time.perf_counter() - start
            finally:
                await conn.close()

        return asyncio.run(run())

    def pickup(self, n: int, rate: float) -> list[float]:
        import asyncpg

        latencies = Latencies(n)
        self._on_run = lambda job: latencies.record(json.loads(job.payload)["t"])

        async def run() -> list[float]:
            conn = await asyncpg.connect(self._dsn)
            try:
                manager = self._manager(conn)
                worker = asyncio.create_task(manager.run(batch_size=CONCURRENCY))
                await asyncio.sleep(IDLE_BEFORE_PICKUP)
                async with self._queries() as queries:
                    async for i in _paced(n, rate):
                        await queries.enqueue("noop", json.dumps({"i": i, "t": time.perf_counter()}).encode())
                await _wait_event(latencies.done, "pgqueuer pickups")
                manager.shutdown.set()
                await asyncio.wait_for(worker, 30)
                return list(latencies.values)
            finally:
                await conn.close()

        return asyncio.run(run())
